-- Maintenance windows may have a name (a slug), unique among those not removed: what
-- `fleetmon maintenance apply` keys a file's windows by. Windows made without one
-- (`fleetmon maintenance add`) have none and are left alone by an apply.
ALTER TABLE maintenance_windows ADD COLUMN name text;
CREATE UNIQUE INDEX maintenance_windows_live_name
    ON maintenance_windows (name) WHERE removed_at IS NULL AND name IS NOT NULL;

-- The view names its columns when made: made again for the new one.
DROP VIEW maintenance_windows_shown;
CREATE VIEW maintenance_windows_shown AS
SELECT w.*,
       to_char(w.start_time, 'HH24:MI') AS start_hhmm,
       (extract(epoch FROM w.duration) / 60)::bigint AS duration_minutes,
       maintenance_active(w, clock_timestamp()) AS active
FROM maintenance_windows w;
