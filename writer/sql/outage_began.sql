-- Dates the outage of the check_down alert just opened on $1 in sample time ($2: the
-- run that made the quorum-th location DOWN).
UPDATE alerts
SET began_at = $2
WHERE kind = 'check_down'
  AND subject = $1
  AND resolved_at IS NULL
