"""create_index, drop_index, add_constraint, drop_constraint through their whole lifecycle."""

from __future__ import annotations

import pytest

from .harness import Case, run

TABLE = """
CREATE TABLE posts (id bigint PRIMARY KEY, title text, score real, author_id bigint);
CREATE TABLE "Users" ("Id" bigint PRIMARY KEY, "Email" text);
INSERT INTO "Users" SELECT g, 'u' || g FROM generate_series(1, 300) AS g;
INSERT INTO posts SELECT g, 'post ' || g, (g % 10) / 10.0, g FROM generate_series(1, 300) AS g;
"""


def valid(name: str):
    def check(db):
        row = db.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", (name,)).fetchone()
        assert row == (True,), f"{name} should be there and validated: {row}"
    return check


def index_valid(name: str):
    def check(db):
        row = db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)).fetchone()
        assert row == (True,), f"index {name}: {row}"
    return check


def gone(db, name: str) -> None:
    assert db.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,)


def fails(statement: str, error: str):
    def check(db):
        with pytest.raises(Exception, match=error), db.transaction():
            db.execute(statement)
    return check


CASES = [
    Case("index", TABLE, [{"op": "create_index", "name": "posts_title", "table": "posts", "columns": ["title"]}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'a')",), after_expand=index_valid("posts_title")),
    Case("partial unique index on a quoted table", TABLE,
         [{"op": "create_index", "name": "Users_Email_key", "table": "Users", "columns": ["Email"], "unique": True,
           "where": '"Email" IS NOT NULL'}], after_expand=index_valid('"Users_Email_key"')),
    Case("drop index", TABLE + "CREATE INDEX posts_score ON posts (score);",
         [{"op": "drop_index", "name": "posts_score", "table": "posts", "columns": ["score"]}],
         after_expand=index_valid("posts_score"),
         after_contract=lambda db: gone(db, "posts_score")),
    Case("check", TABLE, [{"op": "add_constraint", "table": "posts", "name": "score_range",
                           "check": "score BETWEEN 0 AND 1"}],
         old_writes=("INSERT INTO posts (id, score) VALUES (1002, 0.5)",), after_expand=valid("score_range")),
    Case("check that rows violate", TABLE + "UPDATE posts SET score = 7 WHERE id = 3;",
         [{"op": "add_constraint", "table": "posts", "name": "score_range", "check": "score BETWEEN 0 AND 1"}],
         fails="preconditions failed, nothing was changed: score_range_holds: found 1 row"),
    Case("foreign key", TABLE, [{"op": "add_constraint", "table": "posts", "name": "posts_author",
                                 "foreign_key": {"columns": ["author_id"], "references": "Users",
                                                 "referenced_columns": ["Id"], "on_delete": "set null"}}],
         after_expand=lambda db: (valid("posts_author")(db), fails(
             "INSERT INTO posts (id, author_id) VALUES (1003, 99999)", "foreign key")(db))),
    Case("unique", TABLE, [{"op": "add_constraint", "table": "posts", "name": "posts_title_key",
                            "unique": ["title"]}],
         after_expand=lambda db: (valid("posts_title_key")(db), fails(
             "INSERT INTO posts (id, title) VALUES (1004, 'post 1')", "duplicate key")(db))),
    Case("not null", TABLE, [{"op": "add_constraint", "table": "posts", "name": "title_set", "not_null": "title"}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1005, 'x')",),
         after_expand=fails("INSERT INTO posts (id) VALUES (1006)", "null value")),
    Case("drop constraint", TABLE + "ALTER TABLE posts ADD CONSTRAINT score_positive CHECK (score >= 0);",
         [{"op": "drop_constraint", "table": "posts", "name": "score_positive", "definition": "CHECK (score >= 0)"}],
         after_expand=valid("score_positive"),
         after_contract_writes=("INSERT INTO posts (id, score) VALUES (1007, -1)", "DELETE FROM posts WHERE id = 1007")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lifecycle(case, tmp_path, dsn, db):
    run(case, tmp_path, dsn, db)
