-- Incidents: what status pages tell the public about a problem, with the operators'
-- updates (`fleetmon incidents`). A quorum outage of a central check (a check_down
-- alert) opens one by itself, in the alert's transaction, and its resolution resolves
-- it unless an operator already did; operators open others by hand and update both.
CREATE TABLE incidents (
    incident_id bigserial   PRIMARY KEY,
    -- Empty for an automatic one: each status page names it after its check.
    title       text        NOT NULL,
    check_ids   text[]      NOT NULL,
    status      text        NOT NULL
                CHECK (status IN ('investigating', 'identified', 'monitoring', 'resolved')),
    alert_id    bigint      UNIQUE REFERENCES alerts ON DELETE SET NULL,
    opened_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_at timestamptz,
    -- The operator, or `fleetmon` for one opened by an alert.
    opened_by   text        NOT NULL
);

CREATE INDEX incidents_recent ON incidents (coalesce(resolved_at, 'infinity'::timestamptz));

-- Each step of an incident, in order: its status then and what was said.
CREATE TABLE incident_updates (
    incident_id bigint      NOT NULL REFERENCES incidents ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    status      text        NOT NULL,
    message     text        NOT NULL,
    author      text        NOT NULL
);

CREATE INDEX incident_updates_incident ON incident_updates (incident_id, at);

CREATE FUNCTION open_incident_of_alert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    INSERT INTO incidents (title, check_ids, status, alert_id, opened_at, opened_by)
    VALUES ('', ARRAY[NEW.subject], 'investigating', NEW.alert_id, NEW.opened_at, 'fleetmon')
    RETURNING incident_id INTO id;
    INSERT INTO incident_updates (incident_id, at, status, message, author)
    VALUES (id, NEW.opened_at, 'investigating',
            'A quorum of locations finds it down.', 'fleetmon');
    RETURN NULL;
END
$$;

CREATE FUNCTION resolve_incident_of_alert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    UPDATE incidents SET status = 'resolved', resolved_at = NEW.resolved_at
    WHERE alert_id = NEW.alert_id AND resolved_at IS NULL
    RETURNING incident_id INTO id;
    IF id IS NOT NULL THEN
        INSERT INTO incident_updates (incident_id, at, status, message, author)
        VALUES (id, NEW.resolved_at, 'resolved',
                'Every location agrees it is back.', 'fleetmon');
    END IF;
    RETURN NULL;
END
$$;

-- Central checks only: a site of an agent's own config (subject "AGENT URL") is on no
-- status page.
CREATE TRIGGER alerts_open_incident AFTER INSERT ON alerts
    FOR EACH ROW WHEN (NEW.kind = 'check_down' AND position(' ' IN NEW.subject) = 0)
    EXECUTE FUNCTION open_incident_of_alert();
CREATE TRIGGER alerts_resolve_incident AFTER UPDATE OF resolved_at ON alerts
    FOR EACH ROW WHEN (NEW.kind = 'check_down' AND OLD.resolved_at IS NULL
                       AND NEW.resolved_at IS NOT NULL)
    EXECUTE FUNCTION resolve_incident_of_alert();

-- An incident as the API and status pages show it: its updates (oldest first) as a
-- JSON array of {at (unix seconds), status, message, author}.
CREATE VIEW incidents_shown AS
SELECT i.incident_id, i.title, i.check_ids, i.status, i.alert_id, i.opened_at,
       i.resolved_at, i.opened_by,
       (SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'at', extract(epoch FROM u.at), 'status', u.status,
                   'message', u.message, 'author', u.author) ORDER BY u.at), '[]'::jsonb)
        FROM incident_updates u WHERE u.incident_id = i.incident_id) AS updates
FROM incidents i;
