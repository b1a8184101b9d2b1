-- Adds update ($2 status, $3 message, by $4) to incident $1; `resolved` ends it.
WITH changed AS (
    UPDATE incidents
    SET status = $2,
        resolved_at = CASE WHEN $2 = 'resolved' THEN clock_timestamp() END
    WHERE incident_id = $1
    RETURNING incident_id
)
INSERT INTO incident_updates (incident_id, status, message, author)
SELECT incident_id, $2, $3, $4 FROM changed
