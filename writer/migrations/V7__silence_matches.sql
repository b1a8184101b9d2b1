-- Whether a silence covers an alert: the rule written once, for the Alerts API (an
-- alert's `silenced`) and the notifier (which notifications a silence holds back).
-- A silence's check_id and agent_id each match anything when empty; a check alert
-- (no agent_id) is matched by its check id (its subject), an agent alert by its agent.
CREATE FUNCTION silence_matches(
    silence_check text, silence_agent text, alert_subject text, alert_agent text
) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT (silence_check = '' OR (alert_agent = '' AND silence_check = alert_subject))
       AND (silence_agent = '' OR silence_agent = alert_agent)
$$;
