-- Appended to insert_check_state.sql when a row exists after all (alerts/store.rs):
-- those are left for update_check_state.sql, which then writes every one.
ON CONFLICT (check_id, agent_id) DO NOTHING
