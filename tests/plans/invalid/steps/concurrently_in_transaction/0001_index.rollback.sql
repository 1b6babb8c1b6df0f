DROP INDEX IF EXISTS items_title;
