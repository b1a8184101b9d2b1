-- One audit event ($1 id … $10 after, JSON text or ''; $11 outcome, $12 error); stored
-- once by its id. A 'requested' event is settled by its 'done' or 'failed' one (the
-- after state and the error come with it); a settled event never goes back to
-- 'requested' (a redelivery).
INSERT INTO audit_log AS a (event_id, at, actor_uri, actor, actor_role, remote_address,
                            action, subject, before, after, outcome, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, nullif($9, '')::jsonb, nullif($10, '')::jsonb,
        $11, $12)
ON CONFLICT (event_id) DO UPDATE SET
    after   = EXCLUDED.after,
    outcome = EXCLUDED.outcome,
    error   = EXCLUDED.error
WHERE a.outcome = 'requested' AND EXCLUDED.outcome <> 'requested'
