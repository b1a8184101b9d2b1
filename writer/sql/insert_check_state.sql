-- The check states a batch moved that were not stored before, one row per check and
-- location. A plain INSERT, two and a half times as fast as an upsert: the batch holds
-- the partitions these results come through (lock_partitions.sql), so no other batch
-- makes these rows meanwhile. Should one exist all the same, the batch rolls this back,
-- inserts the missing ones (with check_state_conflict.sql) and updates them all.
INSERT INTO check_state AS s (
    check_id, agent_id, down, consecutive_failures, consecutive_successes, last_ts,
    last_failure, last_error, tls_cert_not_after, changed_at, interval_seconds
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::boolean[], $4::integer[], $5::integer[], $6::timestamptz[],
    $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::integer[]
)
