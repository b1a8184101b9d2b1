-- Whether this writer evaluates the round (a lock held until the round's transaction ends).
SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema())) AS mine
