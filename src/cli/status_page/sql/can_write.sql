-- What the connected role could change in schema $1, or nothing: a superuser, a role
-- that may create roles or objects in the schema, or any table it may write.
SELECT 'it is a superuser' AS power FROM pg_roles WHERE rolname = current_user AND rolsuper
UNION ALL
SELECT 'it may create roles' FROM pg_roles WHERE rolname = current_user AND rolcreaterole
UNION ALL
SELECT format('it may create objects in schema %s', $1::text)
WHERE has_schema_privilege($1::text, 'CREATE')
UNION ALL
(SELECT format('it may write table %s.%s', n.nspname, c.relname)
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1::text AND c.relkind IN ('r', 'p')
   AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
 ORDER BY c.relname LIMIT 1)
