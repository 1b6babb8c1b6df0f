-- Expand: created_by and updated_by on the tables admins change. created_by gets a stable
-- DEFAULT: since PostgreSQL 11 the default of existing rows is kept in the catalog, so this
-- fills every existing row ('bot': the bot created them) without rewriting the table, and
-- rows the old bot inserts get it too. The bot, behind audit_fields_write, sets
-- app.actor to the Discord id it acts for. updated_by is filled by a trigger on UPDATE.
ALTER TABLE servers ADD COLUMN created_by text DEFAULT coalesce(nullif(current_setting('app.actor', true), ''), 'bot');
ALTER TABLE servers ADD COLUMN updated_by text;
ALTER TABLE server_members ADD COLUMN created_by text DEFAULT coalesce(nullif(current_setting('app.actor', true), ''), 'bot');
ALTER TABLE server_members ADD COLUMN updated_by text;
ALTER TABLE verification_events ADD COLUMN created_by text DEFAULT coalesce(nullif(current_setting('app.actor', true), ''), 'bot');
ALTER TABLE verification_events ADD COLUMN updated_by text;
ALTER TABLE admin_actions ADD COLUMN created_by text DEFAULT coalesce(nullif(current_setting('app.actor', true), ''), 'bot');
ALTER TABLE admin_actions ADD COLUMN updated_by text;

CREATE FUNCTION set_updated_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_by := coalesce(nullif(current_setting('app.actor', true), ''), NEW.updated_by, 'bot');
    RETURN NEW;
END $$;
CREATE TRIGGER servers_set_updated_by BEFORE UPDATE ON servers FOR EACH ROW EXECUTE FUNCTION set_updated_by();
CREATE TRIGGER server_members_set_updated_by BEFORE UPDATE ON server_members FOR EACH ROW EXECUTE FUNCTION set_updated_by();
CREATE TRIGGER verification_events_set_updated_by BEFORE UPDATE ON verification_events FOR EACH ROW EXECUTE FUNCTION set_updated_by();
CREATE TRIGGER admin_actions_set_updated_by BEFORE UPDATE ON admin_actions FOR EACH ROW EXECUTE FUNCTION set_updated_by();
