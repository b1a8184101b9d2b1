-- The latest $2 checks of site $1.
SELECT agent_id, stream_id, seq, ts, url, method, status_code, ok, failure, error_message,
       response_time_ms, time_to_first_byte_ms, regex, regex_matched, matched_text, body_bytes,
       final_url, tls_cert_not_after, check_id, check_version
FROM site_checks
WHERE url = $1
ORDER BY ts DESC
LIMIT $2
