-- The window named $1 that is not removed, if any (locked until the transaction ends).
SELECT window_id FROM maintenance_windows
WHERE name = $1 AND removed_at IS NULL
FOR UPDATE
