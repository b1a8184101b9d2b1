-- Agents whose latest memory use is above $1 percent.
SELECT agent_id, memory_percent AS used_percent
FROM agents
WHERE memory_percent > $1
ORDER BY agent_id
