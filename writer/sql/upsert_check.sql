-- One definition from the checks topic: a newer version replaces the row, and so
-- does any version of a check that was deleted (created again).
INSERT INTO checks AS c (check_id, version, paused, kind, target, interval_seconds, definition, grace_seconds)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (check_id) DO UPDATE SET
    version          = EXCLUDED.version,
    paused           = EXCLUDED.paused,
    kind             = EXCLUDED.kind,
    target           = EXCLUDED.target,
    interval_seconds = EXCLUDED.interval_seconds,
    definition       = EXCLUDED.definition,
    grace_seconds    = EXCLUDED.grace_seconds,
    updated_at       = now(),
    deleted_at       = NULL
WHERE c.version < EXCLUDED.version OR c.deleted_at IS NOT NULL
