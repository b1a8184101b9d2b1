-- Opens alerts of kind $1 on the checks $2 at once (a batch's rules: agents $3, causes
-- $4, locations $5 as JSON arrays, $6 when each outage began in sample time), each
-- unless one of its kind is open on it; returns the id and subject of each opened.
INSERT INTO alerts (kind, subject, agent_id, cause, locations, began_at)
SELECT $1, k.subject, k.agent_id, k.cause,
       ARRAY(SELECT jsonb_array_elements_text(k.locations)), k.began_at
FROM unnest($2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[])
     AS k(subject, agent_id, cause, locations, began_at)
ORDER BY k.subject
ON CONFLICT (kind, subject) WHERE resolved_at IS NULL DO NOTHING
RETURNING alert_id, subject
