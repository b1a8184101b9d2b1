-- The central checks not deleted before $1, with their definitions: what a report
-- selected by labels chooses from.
SELECT check_id, definition
FROM checks
WHERE deleted_at IS NULL OR deleted_at > $1
ORDER BY check_id
