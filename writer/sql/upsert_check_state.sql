-- The check states a batch moved that were not stored before, one row per check and
-- location (an upsert: another writer may have made one since).
INSERT INTO check_state AS s (
    check_id, agent_id, down, consecutive_failures, consecutive_successes, last_ts,
    last_failure, last_error, tls_cert_not_after, changed_at, interval_seconds
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::boolean[], $4::integer[], $5::integer[], $6::timestamptz[],
    $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::integer[]
)
ON CONFLICT (check_id, agent_id) DO UPDATE SET
    down                  = EXCLUDED.down,
    consecutive_failures  = EXCLUDED.consecutive_failures,
    consecutive_successes = EXCLUDED.consecutive_successes,
    last_ts               = EXCLUDED.last_ts,
    last_failure          = EXCLUDED.last_failure,
    last_error            = EXCLUDED.last_error,
    tls_cert_not_after    = EXCLUDED.tls_cert_not_after,
    changed_at            = EXCLUDED.changed_at,
    -- 0: the newest result did not say; keep what an earlier one did.
    interval_seconds      = CASE WHEN EXCLUDED.interval_seconds > 0
                                 THEN EXCLUDED.interval_seconds ELSE s.interval_seconds END
