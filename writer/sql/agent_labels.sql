-- Agent $1's labels (a JSON object), if it enrolled with a token.
SELECT labels FROM agent_labels WHERE agent_id = $1
