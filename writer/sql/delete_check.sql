-- A tombstone on the checks topic: the check is gone, its row stays for history.
UPDATE checks SET deleted_at = now() WHERE check_id = $1 AND deleted_at IS NULL
