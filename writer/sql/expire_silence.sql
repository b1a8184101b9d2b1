-- ExpireSilence: ends silence $1 now (an already ended one keeps its end).
UPDATE silences SET ends_at = least(ends_at, clock_timestamp())
WHERE silence_id = $1
RETURNING *
