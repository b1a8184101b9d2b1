-- An open alert's locations and cause, when they changed; returns its id.
UPDATE alerts
SET locations = $3, cause = $4
WHERE kind = $1
  AND subject = $2
  AND resolved_at IS NULL
  AND (locations <> $3 OR cause <> $4)
RETURNING alert_id
