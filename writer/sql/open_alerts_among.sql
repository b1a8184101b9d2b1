-- The open alerts of kind $1 on the subjects $2, with what they say: a batch's rules
-- read them once, and write only where they open, resolve or change one.
SELECT subject, cause, locations
FROM alerts
WHERE kind = $1
  AND subject = ANY($2)
  AND resolved_at IS NULL
