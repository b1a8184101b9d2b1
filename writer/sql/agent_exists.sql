-- A row when agent $1 has sent data.
SELECT 1
FROM agents
WHERE agent_id = $1
