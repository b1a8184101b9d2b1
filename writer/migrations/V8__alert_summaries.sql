-- An alert as the Alerts API shows it: the alert's own columns and whether an active
-- silence covers it, stated once for the list and the single-alert reads.
CREATE VIEW alert_summaries AS
SELECT a.alert_id, a.kind, a.subject, a.agent_id, a.cause, a.locations,
       a.opened_at, a.resolved_at, a.last_notified_at,
       EXISTS (SELECT 1 FROM silences s
               WHERE s.ends_at > now()
                 AND silence_matches(s.check_id, s.agent_id, a.subject, a.agent_id)) AS silenced
FROM alerts a;
