-- Agents' labels, mirrored from the credentials topic (the labels of the token each
-- enrolled with: what label selectors trust), so maintenance windows and channels can
-- select alerts by the labels of the agent they are about.
CREATE TABLE agent_labels (
    agent_id text  PRIMARY KEY,
    labels   jsonb NOT NULL
);

-- A window may select by agent labels (every pair must be among the agent's), alone
-- or with a check and/or an agent.
ALTER TABLE maintenance_windows ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';
ALTER TABLE maintenance_windows DROP CONSTRAINT maintenance_windows_check;
ALTER TABLE maintenance_windows ADD CONSTRAINT maintenance_windows_selects_something
    CHECK (check_id <> '' OR agent_id <> '' OR labels <> '{}');

-- Whether window w covers an alert: as a silence does (check and/or agent), and when it
-- names labels, the alert is about an agent whose labels include them. The rule written
-- once, for the notifier, the Alertmanager resend and the API.
CREATE FUNCTION window_matches(w maintenance_windows, alert_subject text, alert_agent text)
RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT silence_matches(w.check_id, w.agent_id, alert_subject, alert_agent)
       AND (w.labels = '{}'::jsonb OR EXISTS (
            SELECT 1 FROM agent_labels l
            WHERE l.agent_id = alert_agent AND l.labels @> w.labels))
$$;

DROP VIEW maintenance_windows_shown;
CREATE VIEW maintenance_windows_shown AS
SELECT w.*,
       to_char(w.start_time, 'HH24:MI') AS start_hhmm,
       (extract(epoch FROM w.duration) / 60)::bigint AS duration_minutes,
       maintenance_active(w, clock_timestamp()) AS active
FROM maintenance_windows w;

CREATE OR REPLACE VIEW alert_summaries AS
SELECT a.alert_id, a.kind, a.subject, a.agent_id, a.cause, a.locations,
       a.opened_at, a.resolved_at, a.last_notified_at,
       EXISTS (SELECT 1 FROM silences s
               WHERE s.ends_at > now()
                 AND silence_matches(s.check_id, s.agent_id, a.subject, a.agent_id)) AS silenced,
       EXISTS (SELECT 1 FROM maintenance_windows w
               WHERE maintenance_active(w, now())
                 AND window_matches(w, a.subject, a.agent_id)) AS in_maintenance
FROM alerts a;
