-- Window $1 as the API shows it.
SELECT * FROM maintenance_windows_shown WHERE window_id = $1
