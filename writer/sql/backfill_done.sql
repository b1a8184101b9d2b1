-- The day ($1, its UTC midnight) is worked out into the host rollups.
UPDATE host_rollup_backfill SET done = true WHERE day = ($1 AT TIME ZONE 'UTC')::date
