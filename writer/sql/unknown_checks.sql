-- Those of the check ids $1 that name no central check (or a deleted one).
SELECT id FROM unnest($1::text[]) AS id
WHERE NOT EXISTS (SELECT 1 FROM checks c WHERE c.check_id = id AND c.deleted_at IS NULL)
ORDER BY id
