-- The published checks' ($1) results per UTC day from $2 on (check_days).
SELECT check_id, day, results, ok_results
FROM check_days
WHERE check_id = ANY ($1::text[]) AND day >= $2::date
