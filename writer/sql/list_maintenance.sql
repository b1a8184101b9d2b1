-- ListMaintenance: the windows not removed and not over, oldest first.
SELECT *
FROM maintenance_windows_shown
WHERE removed_at IS NULL AND (ends_at IS NULL OR ends_at > clock_timestamp())
ORDER BY window_id
