-- A day whose host buckets are still to be worked out from its raw rows (rows stored
-- before the host rollups began; store/host_rollups.rs, backfill_next_day), locked
-- for this transaction; a day another writer is working out is skipped.
SELECT day::timestamp AT TIME ZONE 'UTC' AS day
FROM host_rollup_backfill
WHERE NOT done
ORDER BY day
LIMIT 1
FOR UPDATE SKIP LOCKED
