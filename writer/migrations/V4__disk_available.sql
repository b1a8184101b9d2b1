-- Disk space as df counts it: from now on `disk_used_bytes` is size - free (blocks
-- reserved for root are neither used nor available) and the space an unprivileged
-- process can still write is its own figure. NULL for samples of older agents,
-- whose `disk_used_bytes` was size - available.
ALTER TABLE host_samples ADD COLUMN disk_available_bytes bigint;
