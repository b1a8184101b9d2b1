-- Staged host samples (distinct within the batch) -> host_samples (rows already
-- stored are skipped). Returns the key of each row inserted, for its processes
-- (store/copy.rs, insert_hosts). Used when a batch holds rows that are already
-- stored (a redelivery); fresh batches are copied straight in.
-- `{columns}` is the COPY column list (store/copy.rs).
INSERT INTO host_samples ({columns})
SELECT {columns} FROM staging_host_samples
ON CONFLICT DO NOTHING
RETURNING agent_id, stream_id, seq, ts
