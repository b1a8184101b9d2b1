-- CreateMaintenance: $1 check id, $2 agent id ('' matches any), $3 reason, $4 the
-- operator, $5 starts_at, $6 ends_at (one-off), $7 weekdays, $8 start time 'HH:MM',
-- $9 duration in minutes, $10 time zone (weekly), $11 name (or NULL), $12 agent labels
-- (a JSON object; {} selects by none); returns the new window's id.
INSERT INTO maintenance_windows
    (check_id, agent_id, reason, created_by, starts_at, ends_at, weekdays, start_time,
     duration, time_zone, name, labels)
VALUES ($1, $2, $3, $4, $5, $6, $7::smallint[], $8::text::time, make_interval(mins => $9), $10, $11, $12)
RETURNING window_id
