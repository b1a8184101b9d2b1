-- Staged host samples (distinct within the batch) -> host_samples (rows already
-- stored are skipped). Returns the rows inserted. Used when a batch holds rows that
-- are already stored (a redelivery); fresh batches are copied straight in.
-- `{columns}` is the COPY column list (store/copy.rs).
WITH inserted AS (
    INSERT INTO host_samples ({columns})
    SELECT {columns} FROM staging_host_samples
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) AS inserted FROM inserted
