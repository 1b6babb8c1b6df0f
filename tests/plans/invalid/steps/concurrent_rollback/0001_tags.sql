CREATE TABLE tags (id int, name text);
