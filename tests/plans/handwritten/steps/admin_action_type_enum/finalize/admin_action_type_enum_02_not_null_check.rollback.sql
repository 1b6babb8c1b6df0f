ALTER TABLE admin_actions DROP CONSTRAINT IF EXISTS action_kind_not_null;
