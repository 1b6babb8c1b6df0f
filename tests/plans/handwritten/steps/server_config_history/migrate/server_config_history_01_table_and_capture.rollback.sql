DROP TRIGGER servers_capture_config_change ON servers;
DROP FUNCTION capture_server_config_change();
DROP TABLE server_config_history;
