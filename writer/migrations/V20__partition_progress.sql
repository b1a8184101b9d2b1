-- How far the writers have stored each partition of the sample topics: every record
-- published to it before stored_up_to is in PostgreSQL (writer/src/consume/progress.rs).
-- The agent-silent rule judges agents only up to the oldest of the host topic's, so
-- no agent is called silent while its samples may still wait in Kafka (a writer
-- killed, stopped or behind).
CREATE TABLE partition_progress (
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    stored_up_to timestamptz NOT NULL,
    saved_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
