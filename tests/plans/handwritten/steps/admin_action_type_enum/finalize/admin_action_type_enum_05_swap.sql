-- Contract, 4/4, one short transaction: the enum column takes the text column's name and
-- indexes, and the trigger goes. The SET NOT NULL needs no scan: the validated CHECK proves it.
ALTER TABLE admin_actions ALTER COLUMN action_kind SET NOT NULL;
ALTER TABLE admin_actions DROP CONSTRAINT action_kind_not_null;
DROP TRIGGER admin_actions_sync_action ON admin_actions;
DROP FUNCTION admin_actions_sync_action();
ALTER TABLE admin_actions DROP COLUMN action_type;
ALTER TABLE admin_actions RENAME COLUMN action_kind TO action_type;
