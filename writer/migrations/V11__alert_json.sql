-- An alert as the notification channels see it: one definition of its JSON, for the
-- outbox's deliveries and for Alertmanager's periodic resend.
CREATE FUNCTION alert_json(a alerts) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', a.alert_id, 'kind', a.kind, 'subject', a.subject,
        'agent_id', a.agent_id, 'cause', a.cause, 'locations', a.locations,
        'opened_at', a.opened_at, 'resolved_at', a.resolved_at)
$$;
