-- Agent $1's credential is gone: so are its labels.
DELETE FROM agent_labels WHERE agent_id = $1
