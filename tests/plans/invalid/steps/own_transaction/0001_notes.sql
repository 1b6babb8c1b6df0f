BEGIN;
CREATE TABLE notes (id int);
COMMIT;
