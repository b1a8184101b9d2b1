-- How often each location runs its check, as its newest result said (0: unknown): a
-- site from an agent's own config has no definition in `checks` to say so.
ALTER TABLE check_state ADD COLUMN interval_seconds integer NOT NULL DEFAULT 0;
