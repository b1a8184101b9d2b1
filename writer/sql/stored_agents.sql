-- Every agent that has stored data, by id.
SELECT agent_id, hostname, os_name, os_version, agent_version, first_seen, last_seen
FROM agents
ORDER BY agent_id
