-- Which of notifications $1 an active maintenance window holds back now, each with the
-- first such window.
SELECT DISTINCT ON (n.notification_id) n.notification_id, w.window_id
FROM notifications n
JOIN alerts a USING (alert_id)
JOIN maintenance_windows w ON maintenance_active(w, clock_timestamp())
                          AND window_matches(w, a.subject, a.agent_id)
WHERE n.notification_id = ANY($1)
ORDER BY n.notification_id, w.window_id
