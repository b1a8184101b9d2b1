-- A row when check $1 exists (not deleted).
SELECT 1
FROM checks
WHERE check_id = $1
  AND deleted_at IS NULL
