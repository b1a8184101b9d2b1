-- Central checks (the collector's Checks service): every site check row names the
-- check and the version that produced it; rows of sites from an agent's own config
-- keep the empty id.
ALTER TABLE site_checks
    ADD COLUMN check_id      text   NOT NULL DEFAULT '',
    ADD COLUMN check_version bigint NOT NULL DEFAULT 0;

CREATE INDEX site_checks_check_ts ON site_checks (check_id, ts) WHERE check_id <> '';

-- The central checks as they stand on the compacted checks topic, mirrored by the
-- writer so stored history can be joined by check id. A deleted check keeps its row
-- (deleted_at set), so the rows it produced still name their target.
CREATE TABLE checks (
    check_id         text        PRIMARY KEY,
    version          bigint      NOT NULL,
    paused           boolean     NOT NULL,
    kind             text        NOT NULL,
    target           text        NOT NULL,
    interval_seconds integer     NOT NULL,
    -- The CheckDefinition protobuf exactly as on the topic.
    definition       bytea       NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
