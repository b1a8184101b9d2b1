-- The central-check results this batch inserted, in the order they ran.
SELECT check_id, agent_id, ts, ok, failure, error_message, tls_cert_not_after
FROM staging_check_results
ORDER BY check_id, agent_id, ts
