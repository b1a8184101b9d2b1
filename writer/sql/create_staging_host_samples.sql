-- The staging table of a batch that meets stored host samples (a redelivery);
-- one per connection, created the first time it is needed, emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS staging_host_samples
    (LIKE host_samples INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
