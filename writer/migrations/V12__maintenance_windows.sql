-- Maintenance windows: planned work. While one is active, the notifications of the
-- alerts it covers (matched as silences match) are held back: the alerts are recorded,
-- nothing is sent. One-off (starts_at to ends_at) or weekly (on weekdays, 0 Sunday to
-- 6 Saturday, from start_time for duration, wall-clock time in time_zone).
CREATE TABLE maintenance_windows (
    window_id  bigserial   PRIMARY KEY,
    check_id   text        NOT NULL,
    agent_id   text        NOT NULL,
    reason     text        NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    starts_at  timestamptz,
    ends_at    timestamptz,
    weekdays   smallint[],
    start_time time,
    duration   interval,
    time_zone  text,
    removed_at timestamptz,
    CHECK (check_id <> '' OR agent_id <> ''),
    CHECK (
        (starts_at IS NOT NULL AND ends_at IS NOT NULL AND weekdays IS NULL)
        OR (starts_at IS NULL AND ends_at IS NULL AND weekdays IS NOT NULL
            AND start_time IS NOT NULL AND duration IS NOT NULL AND time_zone IS NOT NULL)
    )
);

-- The window that held a notification back (it is settled without a request).
ALTER TABLE notifications ADD COLUMN held_by_window bigint;

-- Whether window w is active at `at`: the rule written once, for the notifier, the
-- Alertmanager resend and the API. A weekly window that began on one of the last
-- seven local days and has not run its duration yet is active (a window may cross
-- midnight, and lasts at most a week).
CREATE FUNCTION maintenance_active(w maintenance_windows, at timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT w.removed_at IS NULL AND CASE
        WHEN w.weekdays IS NULL THEN at >= w.starts_at AND at < w.ends_at
        ELSE EXISTS (
            SELECT 1
            FROM generate_series(0, 7) AS back(days)
            CROSS JOIN LATERAL (
                SELECT (at AT TIME ZONE w.time_zone)::date - back.days AS day,
                       at AT TIME ZONE w.time_zone AS local
            ) d
            WHERE extract(dow FROM d.day)::smallint = ANY (w.weekdays)
              AND d.local >= d.day + w.start_time
              AND d.local < d.day + w.start_time + w.duration
        )
    END
$$;

-- A window as the API shows it: its time of day as HH:MM, its duration in minutes and
-- whether it is active now.
CREATE VIEW maintenance_windows_shown AS
SELECT w.*,
       to_char(w.start_time, 'HH24:MI') AS start_hhmm,
       (extract(epoch FROM w.duration) / 60)::bigint AS duration_minutes,
       maintenance_active(w, clock_timestamp()) AS active
FROM maintenance_windows w;

-- Alerts as the API shows them also say whether an active maintenance window covers
-- them (a column added at the end of the view of V8).
CREATE OR REPLACE VIEW alert_summaries AS
SELECT a.alert_id, a.kind, a.subject, a.agent_id, a.cause, a.locations,
       a.opened_at, a.resolved_at, a.last_notified_at,
       EXISTS (SELECT 1 FROM silences s
               WHERE s.ends_at > now()
                 AND silence_matches(s.check_id, s.agent_id, a.subject, a.agent_id)) AS silenced,
       EXISTS (SELECT 1 FROM maintenance_windows w
               WHERE maintenance_active(w, now())
                 AND silence_matches(w.check_id, w.agent_id, a.subject, a.agent_id)) AS in_maintenance
FROM alerts a;
