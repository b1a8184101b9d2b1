-- The subjects of the open alerts of kind $1.
SELECT subject
FROM alerts
WHERE kind = $1
AND resolved_at IS NULL
