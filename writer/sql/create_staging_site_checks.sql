-- The staging table of a batch that meets stored site checks (a redelivery);
-- one per connection, created the first time it is needed, emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS staging_site_checks
    (LIKE site_checks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
