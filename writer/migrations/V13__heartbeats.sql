-- Heartbeat checks: how late a run may be (or how long a started one may take) before
-- the check is DOWN; 0 for other kinds. A heartbeat's period is its interval_seconds.
ALTER TABLE checks ADD COLUMN grace_seconds integer NOT NULL DEFAULT 0;
