-- Locks the states of checks $1, in the order batches update them (key order).
SELECT 1
FROM check_state
WHERE check_id = ANY($1)
ORDER BY check_id, agent_id
FOR UPDATE
