-- One audit event ($1 id … $10 after, JSON text or ''); stored once by its id.
INSERT INTO audit_log (event_id, at, actor_uri, actor, actor_role, remote_address,
                       action, subject, before, after)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, nullif($9, '')::jsonb, nullif($10, '')::jsonb)
ON CONFLICT (event_id) DO NOTHING
