-- The definitions of the checks named in $1, for their alerting thresholds.
SELECT check_id, definition
FROM checks
WHERE check_id = ANY($1)
