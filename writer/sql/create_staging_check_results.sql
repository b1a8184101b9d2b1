-- The central-check rows a batch inserted, for the alert rules; one per connection,
-- created the first time a batch holds such rows, emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS staging_check_results (
    check_id           text        NOT NULL,
    agent_id           text        NOT NULL,
    ts                 timestamptz NOT NULL,
    ok                 boolean     NOT NULL,
    failure            text,
    error_message      text        NOT NULL,
    tls_cert_not_after timestamptz
) ON COMMIT DELETE ROWS
