-- RemoveMaintenance: removes window $1 now (a removed one keeps its time); returns its id.
UPDATE maintenance_windows
SET removed_at = coalesce(removed_at, clock_timestamp())
WHERE window_id = $1
RETURNING window_id
