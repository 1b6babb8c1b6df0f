-- The seed's audit_logs, and one generic capture of INSERT, UPDATE and DELETE. Each trigger
-- names the table's key columns and the column holding its guild (TG_ARGV); the capture
-- runs only where rollout.is_enabled('audit_log_capture', guild). Chosen tables: those
-- admins change (servers, server_members, verification_events, admin_actions). Not
-- detection_events (millions of bot-written rows: auditing it would double its writes) and
-- not users (no guild to roll out by).
CREATE TABLE IF NOT EXISTS audit_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    table_name text NOT NULL,
    record_id text NOT NULL,
    action text NOT NULL CHECK (action IN ('INSERT', 'UPDATE', 'DELETE')),
    changed_by text NOT NULL,
    changed_at timestamptz DEFAULT now(),
    old_values jsonb,
    new_values jsonb
);
CREATE INDEX IF NOT EXISTS idx_audit_logs_record ON audit_logs (table_name, record_id, changed_at);
ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Full access for service role" ON audit_logs USING (true) WITH CHECK (true);

CREATE FUNCTION audit_log_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current_row jsonb := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    record_key text;
BEGIN
    IF NOT rollout.is_enabled('audit_log_capture', current_row ->> TG_ARGV[1]) THEN
        RETURN NULL;
    END IF;
    SELECT string_agg(current_row ->> key, '/') INTO record_key FROM unnest(string_to_array(TG_ARGV[0], ',')) AS key;
    INSERT INTO audit_logs (table_name, record_id, action, changed_by, old_values, new_values)
    VALUES (TG_TABLE_NAME, record_key, TG_OP, coalesce(nullif(current_setting('app.actor', true), ''), current_user),
            CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END, CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
    RETURN NULL;
END $$;

CREATE TRIGGER servers_audit AFTER INSERT OR UPDATE OR DELETE ON servers
    FOR EACH ROW EXECUTE FUNCTION audit_log_capture('guild_id', 'guild_id');
CREATE TRIGGER server_members_audit AFTER INSERT OR UPDATE OR DELETE ON server_members
    FOR EACH ROW EXECUTE FUNCTION audit_log_capture('server_id,user_id', 'server_id');
CREATE TRIGGER verification_events_audit AFTER INSERT OR UPDATE OR DELETE ON verification_events
    FOR EACH ROW EXECUTE FUNCTION audit_log_capture('id', 'server_id');
CREATE TRIGGER admin_actions_audit AFTER INSERT OR UPDATE OR DELETE ON admin_actions
    FOR EACH ROW EXECUTE FUNCTION audit_log_capture('id', 'server_id');
