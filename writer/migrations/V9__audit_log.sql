-- The audit trail: every change an operator made (fleetmon.v1.AuditEvent), from the
-- collectors (through the audit topic) and from the writers themselves (silences,
-- dead-letter replays). An event is stored once, by its id.
CREATE TABLE audit_log (
    event_id       text        PRIMARY KEY,
    at             timestamptz NOT NULL,
    actor_uri      text        NOT NULL,
    actor          text        NOT NULL,
    actor_role     text        NOT NULL,
    remote_address text        NOT NULL,
    action         text        NOT NULL,
    subject        text        NOT NULL,
    before         jsonb,
    after          jsonb
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_actor_at ON audit_log (actor, at DESC);
