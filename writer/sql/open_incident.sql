-- Opens an incident by hand: title $1, checks $2, status $3, by operator $4, with its
-- first update saying $5; its id.
WITH opened AS (
    INSERT INTO incidents (title, check_ids, status, opened_by)
    VALUES ($1, $2::text[], $3, $4)
    RETURNING incident_id, opened_at
)
INSERT INTO incident_updates (incident_id, at, status, message, author)
SELECT incident_id, opened_at, $3, $5, $4 FROM opened
RETURNING incident_id
