-- Per-connection staging tables for binary COPY; emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS staging_host_samples
    (LIKE host_samples INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_site_checks
    (LIKE site_checks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
-- The central-check rows a batch inserted, for the alert rules.
CREATE TEMP TABLE IF NOT EXISTS staging_check_results (
    check_id           text        NOT NULL,
    agent_id           text        NOT NULL,
    ts                 timestamptz NOT NULL,
    ok                 boolean     NOT NULL,
    failure            text,
    error_message      text        NOT NULL,
    tls_cert_not_after timestamptz
) ON COMMIT DELETE ROWS;
