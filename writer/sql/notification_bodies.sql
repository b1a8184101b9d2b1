-- Each of notifications $1 with its alert, as JSON, in order.
SELECT jsonb_build_object(
           'notification_id', n.notification_id,
           'event', n.event,
           'alert', alert_json(a))::text AS body
FROM notifications n
JOIN alerts a USING (alert_id)
WHERE n.notification_id = ANY($1)
ORDER BY n.notification_id
