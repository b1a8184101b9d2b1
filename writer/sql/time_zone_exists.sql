-- Whether PostgreSQL knows the time zone $1 (an IANA name such as Europe/Berlin).
SELECT 1 FROM pg_timezone_names WHERE name = $1
