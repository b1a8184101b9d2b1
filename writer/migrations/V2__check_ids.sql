-- Central checks (the collector's Checks service): every site check row names the
-- check and the version that produced it; rows of sites from an agent's own config
-- keep the empty id.
ALTER TABLE site_checks
    ADD COLUMN check_id      text   NOT NULL DEFAULT '',
    ADD COLUMN check_version bigint NOT NULL DEFAULT 0;

CREATE INDEX site_checks_check_ts ON site_checks (check_id, ts) WHERE check_id <> '';
