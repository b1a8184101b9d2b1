-- Staged site checks (distinct within the batch) -> site_checks (rows already stored
-- are skipped). Returns the key of each row inserted, for their rollups and the
-- alert rules' input (store/copy.rs, record_checks). Used when a batch
-- holds rows that are already stored (a redelivery); fresh batches are copied
-- straight in.
-- `{columns}` is the COPY column list (store/copy.rs).
INSERT INTO site_checks ({columns})
SELECT {columns} FROM staging_site_checks
ON CONFLICT DO NOTHING
RETURNING agent_id, stream_id, seq, ts
