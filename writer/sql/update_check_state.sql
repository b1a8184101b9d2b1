-- The check states a batch moved that were stored before (read by
-- location_states.sql), one row per check and location. An UPDATE, not an
-- upsert: it changes no key, so it can stay in the row's page (fillfactor, V24).
UPDATE check_state AS s SET
    down                  = k.down,
    consecutive_failures  = k.consecutive_failures,
    consecutive_successes = k.consecutive_successes,
    last_ts               = k.last_ts,
    last_failure          = k.last_failure,
    last_error            = k.last_error,
    tls_cert_not_after    = k.tls_cert_not_after,
    changed_at            = k.changed_at,
    -- 0: the newest result did not say; keep what an earlier one did.
    interval_seconds      = CASE WHEN k.interval_seconds > 0
                                 THEN k.interval_seconds ELSE s.interval_seconds END
FROM unnest(
    $1::text[], $2::text[], $3::boolean[], $4::integer[], $5::integer[], $6::timestamptz[],
    $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::integer[]
) AS k(check_id, agent_id, down, consecutive_failures, consecutive_successes, last_ts,
       last_failure, last_error, tls_cert_not_after, changed_at, interval_seconds)
WHERE s.check_id = k.check_id AND s.agent_id = k.agent_id
