-- Contract, 2/4: ...validated while reads and writes go on (SHARE UPDATE EXCLUSIVE).
ALTER TABLE admin_actions VALIDATE CONSTRAINT action_kind_not_null;
