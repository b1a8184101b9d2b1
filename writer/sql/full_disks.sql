-- Agents whose latest disk use is above $1 percent.
SELECT agent_id, disk_percent AS used_percent
FROM agents
WHERE disk_percent > $1
ORDER BY agent_id
