-- builds the index without blocking writes
CREATE INDEX CONCURRENTLY IF NOT EXISTS items_title ON items (title);
