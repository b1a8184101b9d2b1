-- Agent $1's labels are $2 (a JSON object), from its credential.
INSERT INTO agent_labels (agent_id, labels) VALUES ($1, $2)
ON CONFLICT (agent_id) DO UPDATE SET labels = EXCLUDED.labels
