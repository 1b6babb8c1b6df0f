-- The seed's server_config_history, and the capture of every change to servers.settings.
-- The trigger asks rollout.is_enabled('config_history_capture', guild): the flag turns the
-- capture on guild by guild (10%, 50%, 100%) and off at once. changed_by is the Discord id
-- the bot sets for its transaction (SET LOCAL app.actor = '...'), else the database role.
CREATE TABLE IF NOT EXISTS server_config_history (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    server_id text REFERENCES servers(guild_id) ON DELETE CASCADE,
    changed_by text NOT NULL,
    changed_at timestamptz DEFAULT now(),
    old_settings jsonb,
    new_settings jsonb
);
CREATE INDEX IF NOT EXISTS idx_server_config_history_server_changed_at
    ON server_config_history (server_id, changed_at);
ALTER TABLE server_config_history ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Full access for service role" ON server_config_history USING (true) WITH CHECK (true);

CREATE FUNCTION capture_server_config_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF rollout.is_enabled('config_history_capture', NEW.guild_id) THEN
        INSERT INTO server_config_history (server_id, changed_by, old_settings, new_settings)
        VALUES (NEW.guild_id, coalesce(nullif(current_setting('app.actor', true), ''), current_user),
                OLD.settings, NEW.settings);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER servers_capture_config_change
    AFTER UPDATE OF settings ON servers
    FOR EACH ROW WHEN (OLD.settings IS DISTINCT FROM NEW.settings)
    EXECUTE FUNCTION capture_server_config_change();
