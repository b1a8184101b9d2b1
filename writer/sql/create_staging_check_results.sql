-- The check rows a batch inserted, for the alert rules; one per connection, created
-- the first time a batch holds such rows, emptied at every commit. `check_id` is the
-- rule key: a central check's id, or `AGENT URL` for a site from an agent's own config
-- (fleetmon::samples::alert_check_key).
CREATE TEMP TABLE IF NOT EXISTS staging_check_results (
    check_id           text        NOT NULL,
    agent_id           text        NOT NULL,
    ts                 timestamptz NOT NULL,
    ok                 boolean     NOT NULL,
    failure            text,
    error_message      text        NOT NULL,
    tls_cert_not_after timestamptz,
    interval_seconds   integer     NOT NULL
) ON COMMIT DELETE ROWS
