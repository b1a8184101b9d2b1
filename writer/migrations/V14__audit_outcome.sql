-- Changes are recorded before they are attempted ('requested'), then settled: 'done' or
-- 'failed' (with the error). Earlier events, and the writer's own, are 'done'.
ALTER TABLE audit_log
    ADD COLUMN outcome text NOT NULL DEFAULT 'done',
    ADD COLUMN error   text NOT NULL DEFAULT '';
