-- Alerts. Every state below changes only in the transaction that stores the rows
-- causing the change (or, for rules decided by time, under one advisory lock), so a
-- replayed batch changes nothing and a transition happens exactly once.

-- One row per central check and location (agent): consecutive results and whether
-- this location calls the check DOWN.
CREATE TABLE check_state (
    check_id              text        NOT NULL,
    agent_id              text        NOT NULL,
    down                  boolean     NOT NULL,
    consecutive_failures  integer     NOT NULL,
    consecutive_successes integer     NOT NULL,
    -- The newest result taken into account; older ones arriving late are ignored.
    last_ts               timestamptz NOT NULL,
    last_failure          text,
    last_error            text        NOT NULL,
    tls_cert_not_after    timestamptz,
    changed_at            timestamptz NOT NULL,
    PRIMARY KEY (check_id, agent_id)
);

CREATE INDEX check_state_agent ON check_state (agent_id);

-- An alert is open while resolved_at is null; at most one is open per kind and subject.
CREATE TABLE alerts (
    alert_id         bigserial   PRIMARY KEY,
    -- check_down, location_unreachable, agent_silent, disk_full, memory_full, cpu_busy,
    -- tls_expiring
    kind             text        NOT NULL,
    -- The check id, or the agent id.
    subject          text        NOT NULL,
    -- The agent whose host the alert is about, or '' (silences by agent match it).
    agent_id         text        NOT NULL DEFAULT '',
    cause            text        NOT NULL,
    locations        text[]      NOT NULL DEFAULT '{}',
    opened_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    resolved_at      timestamptz,
    last_notified_at timestamptz,
    last_reminded_at timestamptz
);

CREATE UNIQUE INDEX alerts_one_open ON alerts (kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_opened ON alerts (opened_at DESC);

-- What happened to an alert, in order: opened, updated (locations or cause), reminder, resolved.
CREATE TABLE alert_events (
    alert_id  bigint      NOT NULL REFERENCES alerts ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    event     text        NOT NULL,
    detail    text        NOT NULL,
    locations text[]      NOT NULL DEFAULT '{}'
);

CREATE INDEX alert_events_alert ON alert_events (alert_id, at);

-- The outbox: one row per notification and channel, written with the transition.
-- The notifier groups pending rows into a delivery (delivery_key, the idempotency
-- key sent with it), leases it, sends it and marks it delivered.
CREATE TABLE notifications (
    notification_id bigserial   PRIMARY KEY,
    alert_id        bigint      NOT NULL REFERENCES alerts ON DELETE CASCADE,
    channel         text        NOT NULL,
    -- opened, resolved or reminder
    event           text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivery_key    text,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at    timestamptz,
    -- Set instead of sending when a silence matched at delivery time.
    silenced_by     bigint,
    last_error      text        NOT NULL DEFAULT ''
);

CREATE INDEX notifications_pending ON notifications (channel, next_attempt_at)
    WHERE delivered_at IS NULL;

-- Silences match alerts by check id or agent id (an empty field matches anything,
-- but not both empty) until ends_at. Alerts are still recorded; only their
-- notifications are held back.
CREATE TABLE silences (
    silence_id bigserial   PRIMARY KEY,
    check_id   text        NOT NULL,
    agent_id   text        NOT NULL,
    reason     text        NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ends_at    timestamptz NOT NULL,
    CHECK (check_id <> '' OR agent_id <> '')
);

-- What host rules read: each agent's sampling interval and its latest resource use.
ALTER TABLE agents
    ADD COLUMN interval_seconds integer          NOT NULL DEFAULT 0,
    ADD COLUMN cpu_percent      double precision,
    ADD COLUMN memory_percent   double precision,
    ADD COLUMN disk_percent     double precision;
