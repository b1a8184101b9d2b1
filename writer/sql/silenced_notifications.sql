-- Which of notifications $1 a silence holds back now, each with the first such silence.
SELECT DISTINCT ON (n.notification_id) n.notification_id, s.silence_id
FROM notifications n
JOIN alerts a USING (alert_id)
JOIN silences s ON s.ends_at > clock_timestamp()
               AND silence_matches(s.check_id, s.agent_id, a.subject, a.agent_id)
WHERE n.notification_id = ANY($1)
ORDER BY n.notification_id, s.silence_id
