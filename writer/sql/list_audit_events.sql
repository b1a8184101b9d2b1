-- ListAuditEvents: since $1, of actor $2 ('' for all), newest first, at most $3.
SELECT event_id, at, actor_uri, actor, actor_role, remote_address, action, subject,
       coalesce(before::text, '') AS before, coalesce(after::text, '') AS after,
       outcome, error
FROM audit_log
WHERE at >= $1 AND ($2 = '' OR actor = $2)
ORDER BY at DESC, event_id
LIMIT $3
