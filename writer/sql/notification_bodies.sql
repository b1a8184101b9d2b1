-- Each of notifications $1 with its alert, as JSON, in order.
SELECT jsonb_build_object(
           'notification_id', n.notification_id,
           'event', n.event,
           'alert', jsonb_build_object(
               'id', a.alert_id, 'kind', a.kind, 'subject', a.subject,
               'agent_id', a.agent_id, 'cause', a.cause, 'locations', a.locations,
               'opened_at', a.opened_at, 'resolved_at', a.resolved_at))::text AS body
FROM notifications n
JOIN alerts a USING (alert_id)
WHERE n.notification_id = ANY($1)
ORDER BY n.notification_id
