-- Per-connection staging tables for binary COPY; emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS staging_host_samples
    (LIKE host_samples INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_site_checks
    (LIKE site_checks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
