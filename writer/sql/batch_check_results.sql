-- The central-check results this batch inserted, in the order they ran.
-- Columns: see create_staging_check_results.sql.
SELECT *
FROM staging_check_results
ORDER BY check_id, agent_id, ts
