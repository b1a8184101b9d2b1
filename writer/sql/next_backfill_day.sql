-- A day whose host rows stored before the host rollups began are not yet added up
-- (store/host_rollups.rs, backfill_next_day), locked for this transaction; a day
-- another writer is adding up is skipped.
SELECT day::timestamp AT TIME ZONE 'UTC' AS day, cutoff
FROM host_rollup_backfill
WHERE NOT done
ORDER BY day
LIMIT 1
FOR UPDATE SKIP LOCKED
