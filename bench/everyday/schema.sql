-- A small blog that already holds rows: the database the twelve everyday changes start from.
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint, title text NOT NULL, body text, legacy_score text);
CREATE TABLE reviews (id bigint PRIMARY KEY, post_id bigint, review text, rating text);
CREATE TABLE tags (id bigint PRIMARY KEY, name text NOT NULL);

INSERT INTO users SELECT g, 'user ' || g, 'user' || g || '@example.com' FROM generate_series(1, 500) AS g;
INSERT INTO posts SELECT g, 1 + g % 500, 'post number ' || g, 'body ' || g, (g % 7)::text FROM generate_series(1, 2000) AS g;
INSERT INTO reviews SELECT g, 1 + g % 2000, CASE WHEN g % 4 = 0 THEN NULL ELSE 'review ' || g END, (1 + g % 5)::text
  FROM generate_series(1, 3000) AS g;
INSERT INTO tags SELECT g, 'tag ' || g FROM generate_series(1, 50) AS g;
