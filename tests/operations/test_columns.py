"""add_column, drop_column, rename_column and alter_column through their whole lifecycle, with
the old application's writes (which do not know the new shape) and the new one's, and each
row checked through both shapes."""

from __future__ import annotations

import pytest

from ..conftest import Rollout, write_plan
from .harness import Case, plan_for, run

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - the test extra installs it
    given = None

TABLES = """
CREATE TABLE "Users" ("Id" bigint PRIMARY KEY, "Email" text);
CREATE TABLE posts (
    id bigint PRIMARY KEY, title text NOT NULL, body text, score real, hits integer NOT NULL DEFAULT 0,
    amount text, status text NOT NULL DEFAULT 'draft', author_id bigint);
CREATE INDEX posts_hits ON posts (hits);
CREATE INDEX posts_author ON posts (author_id, id);
CREATE TABLE "Orders" ("Id" bigint PRIMARY KEY, "Total" integer, "Note" text);
INSERT INTO "Users" SELECT g, 'u' || g FROM generate_series(1, 300) AS g;
INSERT INTO posts
SELECT g, 'post ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'body ' || g END, (g % 10) / 10.0, g * 7,
       CASE g % 4 WHEN 0 THEN ' ' || g || ' ' WHEN 1 THEN '' WHEN 2 THEN NULL ELSE g::text END,
       CASE WHEN g % 2 = 0 THEN 'live' ELSE 'draft' END, g
  FROM generate_series(1, 300) AS g;
INSERT INTO "Orders" SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE g * 100 END, 'n' || g FROM generate_series(1, 300) AS g;
"""


# -- checks ---------------------------------------------------------------------------------------

def none(query: str):
    """No row comes back: every row of the table is as the query's negation says."""
    def check(db):
        rows = db.execute(query).fetchall()
        assert rows == [], (query, rows[:5])
    return check


def reads(*writes: str, query: str, expect: list):
    """After `writes` (rolled back afterwards), `query` returns `expect`."""
    def check(db):
        with db.transaction(force_rollback=True):
            for statement in writes:
                db.execute(statement)
            got = db.execute(query).fetchall()
        assert got == expect, (writes, query, got)
    return check


def refused(statement: str, error: str):
    def check(db):
        with pytest.raises(Exception, match=error), db.transaction():
            db.execute(statement)
    return check


def column(table: str, name: str, expect: tuple | None):
    """(type, NOT NULL, default) of a column, or None when it does not exist."""
    def check(db):
        got = db.execute(
            "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute AS a LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (table, name)).fetchone()
        assert got == expect, (table, name, got)
    return check


def every(*checks):
    def check(db):
        for c in checks:
            c(db)
    return check


# -- cases ----------------------------------------------------------------------------------------

LENGTH = "SELECT id FROM posts WHERE title_length IS DISTINCT FROM length(title)"

CASES = [
    Case("add_column with a constant default", TABLES,
         [{"op": "add_column", "table": "posts", "column": "views", "type": "integer", "default": "0"}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')",),
         new_writes=("INSERT INTO posts (id, title, views) VALUES (1002, 'new', 5)",),
         after_expand=every(
             none("SELECT id FROM posts WHERE views IS DISTINCT FROM 0"),
             column("posts", "views", ("integer", False, "0")),
             reads("INSERT INTO posts (id, title) VALUES (1001, 'old')",
                   query="SELECT views FROM posts WHERE id = 1001", expect=[(0,)])),
         after_contract=column("posts", "views", ("integer", False, "0")),
         after_rollback=column("posts", "views", None)),
    Case("add_column on two tables, set on every update by either application, not by backfills", TABLES,
         [{"op": "add_column", "tables": ["posts", "Orders"], "column": "updated_by", "type": "text",
           "on_update": "coalesce(nullif(current_setting('app.who', true), ''), updated_by, 'nobody')"},
          # a backfill on the same table is rollout's update, not an application's: it stamps nothing
          {"op": "add_column", "table": "posts", "column": "title_length", "type": "integer", "up": "length(title)"}],
         old_writes=("UPDATE posts SET title = 'old' WHERE id = 1", """UPDATE "Orders" SET "Note" = 'old' WHERE "Id" = 1""",
                     "INSERT INTO posts (id, title) VALUES (1001, 'old')"),
         new_writes=("UPDATE posts SET updated_by = 'me' WHERE id = 2",),
         after_expand=every(
             column("posts", "updated_by", ("text", False, None)), column('"Orders"', "updated_by", ("text", False, None)),
             none("SELECT id FROM posts WHERE updated_by IS NOT NULL"),  # rows nobody updated yet
             reads("UPDATE posts SET title = 't' WHERE id = 1", query="SELECT updated_by FROM posts WHERE id = 1",
                   expect=[("nobody",)]),
             reads("SET LOCAL app.who = 'alice'", """UPDATE "Orders" SET "Note" = 'n' WHERE "Id" = 3""",
                   query="""SELECT updated_by FROM "Orders" WHERE "Id" = 3""", expect=[("alice",)]),
             reads("UPDATE posts SET updated_by = 'bob', title = 'b' WHERE id = 4", "UPDATE posts SET title = 'c' WHERE id = 4",
                   query="SELECT updated_by FROM posts WHERE id = 4", expect=[("bob",)]),
             reads("INSERT INTO posts (id, title) VALUES (1001, 'old')", query="SELECT updated_by FROM posts WHERE id = 1001",
                   expect=[(None,)])),
         after_contract=reads("SET LOCAL app.who = 'carol'", "UPDATE posts SET title = 'x' WHERE id = 5",
                              query="SELECT updated_by FROM posts WHERE id = 5", expect=[("carol",)]),
         after_rollback=every(column("posts", "updated_by", None), column('"Orders"', "updated_by", None))),
    Case("add_column with a volatile default (gen_random_uuid)", TABLES,
         [{"op": "add_column", "table": "posts", "column": "public_id", "type": "uuid",
           "default": "gen_random_uuid()"}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')",),
         after_expand=every(
             none("SELECT id FROM posts WHERE public_id IS NULL"),
             none("SELECT public_id FROM posts GROUP BY public_id HAVING count(*) > 1"),
             column("posts", "public_id", ("uuid", False, "gen_random_uuid()")),
             reads("INSERT INTO posts (id, title) VALUES (1001, 'old')",
                   query="SELECT public_id IS NOT NULL FROM posts WHERE id = 1001", expect=[(True,)])),
         after_contract=none("SELECT id FROM posts WHERE public_id IS NULL")),
    Case("add_column NOT NULL with a constant default", TABLES,
         [{"op": "add_column", "table": "posts", "column": "kind", "type": "text", "default": "'article'",
           "not_null": True}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')",),
         new_writes=("INSERT INTO posts (id, title, kind) VALUES (1002, 'new', 'video')",),
         after_expand=every(
             column("posts", "kind", ("text", True, "'article'::text")),
             none("SELECT id FROM posts WHERE kind IS DISTINCT FROM 'article'"),
             refused("INSERT INTO posts (id, title, kind) VALUES (1003, 'x', NULL)", "null value")),
         after_contract=column("posts", "kind", ("text", True, "'article'::text"))),
    Case("add_column NOT NULL with a volatile default: NOT NULL in the contract", TABLES,
         [{"op": "add_column", "table": "posts", "column": "created", "type": "timestamptz",
           "default": "clock_timestamp()", "not_null": True}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')",),
         after_expand=every(
             column("posts", "created", ("timestamp with time zone", False, "clock_timestamp()")),
             none("SELECT id FROM posts WHERE created IS NULL")),
         after_contract=every(
             column("posts", "created", ("timestamp with time zone", True, "clock_timestamp()")),
             refused("INSERT INTO posts (id, title, created) VALUES (1003, 'x', NULL)", "null value"))),
    Case("add_column with a foreign key", TABLES,
         [{"op": "add_column", "table": "posts", "column": "editor_id", "type": "bigint",
           "references": {"table": "Users", "column": "Id", "on_delete": "set null"}}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')",),
         new_writes=("INSERT INTO posts (id, title, editor_id) VALUES (1002, 'new', 7)",),
         after_expand=every(
             reads(query="SELECT convalidated FROM pg_constraint WHERE conname = 'posts_editor_id_fkey'",
                   expect=[(True,)]),
             refused("INSERT INTO posts (id, title, editor_id) VALUES (1003, 'x', 99999)", "foreign key"),
             reads("UPDATE posts SET editor_id = 7 WHERE id = 1", 'DELETE FROM "Users" WHERE "Id" = 7',
                   query="SELECT editor_id FROM posts WHERE id = 1", expect=[(None,)]))),
    Case("add_column filled by up, NOT NULL in the contract", TABLES,
         [{"op": "add_column", "table": "posts", "column": "title_length", "type": "integer",
           "up": "length(title)", "not_null": True}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'four')",
                     "UPDATE posts SET title = 'longer title' WHERE id = 1"),
         new_writes=("INSERT INTO posts (id, title, title_length) VALUES (1002, 'new', 99)",
                     "UPDATE posts SET title_length = 40 WHERE id = 2"),
         after_expand=every(
             none(LENGTH),
             # the old application's insert and update: the trigger computes it
             reads("INSERT INTO posts (id, title) VALUES (1001, 'four')",
                   query="SELECT title_length FROM posts WHERE id = 1001", expect=[(4,)]),
             reads("UPDATE posts SET title = 'longer title' WHERE id = 1",
                   query="SELECT title_length FROM posts WHERE id = 1", expect=[(12,)]),
             # the new application's values stay: on insert, on update, a deliberate NULL too, and
             # through a later update by the old application
             reads("INSERT INTO posts (id, title, title_length) VALUES (1002, 'new', 99)",
                   query="SELECT title_length FROM posts WHERE id = 1002", expect=[(99,)]),
             reads("UPDATE posts SET title_length = NULL WHERE id = 3", "UPDATE posts SET body = 'b' WHERE id = 3",
                   query="SELECT title_length FROM posts WHERE id = 3", expect=[(None,)]),
             reads("UPDATE posts SET title_length = 40 WHERE id = 4", "UPDATE posts SET title = 't' WHERE id = 4",
                   query="SELECT title_length FROM posts WHERE id = 4", expect=[(40,)]),
             column("posts", "title_length", ("integer", False, None))),
         after_contract=every(
             column("posts", "title_length", ("integer", True, None)),
             none(LENGTH),
             refused("INSERT INTO posts (id, title) VALUES (1003, 'x')", "null value"))),
    Case("drop_column of a nullable column", TABLES,
         [{"op": "drop_column", "table": "posts", "column": "score", "type": "real"}],
         old_writes=("INSERT INTO posts (id, title, score) VALUES (1001, 'old', 0.5)",),
         new_writes=("INSERT INTO posts (id, title) VALUES (1002, 'new')",),
         after_expand=reads(query="SELECT count(*) FROM posts WHERE score IS NOT NULL", expect=[(300,)]),
         after_contract=column("posts", "score", None),
         after_contract_writes=("INSERT INTO posts (id, title) VALUES (1003, 'new')",),
         after_rollback=none("SELECT id FROM posts WHERE score IS DISTINCT FROM ((id % 10) / 10.0)::real")),
    Case("drop_column of a NOT NULL column without a default", TABLES,
         [{"op": "drop_column", "table": "posts", "column": "title", "type": "text", "not_null": True,
           "fill": "''"}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')",),
         new_writes=("INSERT INTO posts (id) VALUES (1002)",),
         after_expand=every(column("posts", "title", ("text", False, None)),
                            none("SELECT id FROM posts WHERE title IS NULL")),
         after_contract=column("posts", "title", None),
         after_contract_writes=("INSERT INTO posts (id) VALUES (1003)",),
         after_rollback=every(column("posts", "title", ("text", True, None)),
                              none("SELECT id FROM posts WHERE title <> 'post ' || id"))),
    Case("drop_column of a NOT NULL column with a default", TABLES,
         [{"op": "drop_column", "table": "posts", "column": "status", "type": "text", "not_null": True,
           "default": "'draft'"}],
         old_writes=("INSERT INTO posts (id, title, status) VALUES (1001, 'old', 'live')",),
         new_writes=("INSERT INTO posts (id, title) VALUES (1002, 'new')",),
         after_expand=column("posts", "status", ("text", True, "'draft'::text")),
         after_contract=column("posts", "status", None),
         after_rollback=every(column("posts", "status", ("text", True, "'draft'::text")),
                              none("SELECT id FROM posts WHERE status <> CASE WHEN id % 2 = 0 THEN 'live' "
                                   "ELSE 'draft' END"))),
    Case("rename_column of a NOT NULL column with a default", TABLES,
         [{"op": "rename_column", "table": "posts", "column": "status", "to": "state", "type": "text",
           "not_null": True, "default": "'draft'"}],
         old_writes=("INSERT INTO posts (id, title, status) VALUES (1001, 'old', 'live')",
                     "INSERT INTO posts (id, title) VALUES (1002, 'old default')",
                     "UPDATE posts SET status = 'gone' WHERE id = 1"),
         new_writes=("INSERT INTO posts (id, title, state) VALUES (1003, 'new', 'live')",
                     "UPDATE posts SET state = 'gone' WHERE id = 2"),
         after_expand=every(
             none("SELECT id FROM posts WHERE state IS DISTINCT FROM status"),
             reads("INSERT INTO posts (id, title, status) VALUES (1001, 'old', 'live')",
                   "INSERT INTO posts (id, title) VALUES (1002, 'old default')",
                   "INSERT INTO posts (id, title, state) VALUES (1003, 'new', 'live')",
                   "UPDATE posts SET status = 'gone' WHERE id = 1", "UPDATE posts SET state = 'held' WHERE id = 2",
                   query="SELECT id, status, state FROM posts WHERE id IN (1, 2, 1001, 1002, 1003) ORDER BY id",
                   expect=[(1, "gone", "gone"), (2, "held", "held"), (1001, "live", "live"),
                           (1002, "draft", "draft"), (1003, "live", "live")]),
             refused("UPDATE posts SET state = NULL WHERE id = 3", "null value")),
         after_contract=every(column("posts", "status", None), column("posts", "state", ("text", True, "'draft'::text")),
                              reads(query="SELECT count(*) FROM posts WHERE state = 'live'", expect=[(150,)])),
         after_contract_writes=("INSERT INTO posts (id, title) VALUES (1004, 'new')",),
         after_rollback=every(column("posts", "state", None),
                              reads(query="SELECT status, count(*) FROM posts GROUP BY status ORDER BY status",
                                    expect=[("draft", 150), ("live", 150)]))),
    Case("rename_column with its index, rebuilt on the new column during the rollout", TABLES,
         [{"op": "rename_column", "table": "posts", "column": "author_id", "to": "writer_id", "type": "bigint",
           "indexes": [{"name": "posts_author", "columns": ["author_id", "id"]}]}],
         old_writes=("INSERT INTO posts (id, title, author_id) VALUES (1001, 'old', 5)",),
         new_writes=("INSERT INTO posts (id, title, writer_id) VALUES (1002, 'new', 6)",),
         after_expand=every(
             none("SELECT id FROM posts WHERE writer_id IS DISTINCT FROM author_id"),
             reads(query="SELECT pg_get_indexdef(indexrelid), indisvalid FROM pg_index "
                         "WHERE indexrelid = '_rollout_posts_author'::regclass",
                   expect=[("CREATE INDEX _rollout_posts_author ON public.posts USING btree (writer_id, id)", True)])),
         after_contract=reads(query="SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'posts' "
                                    "AND indexdef LIKE '%writer_id%'",
                              expect=[("posts_author", "CREATE INDEX posts_author ON public.posts USING btree "
                                                       "(writer_id, id)")]),
         after_rollback=none("SELECT id FROM posts WHERE author_id IS DISTINCT FROM id")),
    Case('rename_column on a mixed-case table: "Orders"."Note"', TABLES,
         [{"op": "rename_column", "table": "Orders", "column": "Note", "to": "Comment", "type": "text"}],
         old_writes=('INSERT INTO "Orders" ("Id", "Note") VALUES (1001, \'old\')',),
         new_writes=('INSERT INTO "Orders" ("Id", "Comment") VALUES (1002, \'new\')',
                     'UPDATE "Orders" SET "Comment" = NULL WHERE "Id" = 1'),
         after_expand=every(
             none('SELECT "Id" FROM "Orders" WHERE "Comment" IS DISTINCT FROM "Note"'),
             reads('UPDATE "Orders" SET "Comment" = NULL WHERE "Id" = 1',
                   query='SELECT "Note", "Comment" FROM "Orders" WHERE "Id" = 1', expect=[(None, None)]),
             reads('INSERT INTO "Orders" ("Id", "Comment") VALUES (1002, \'new\')',
                   query='SELECT "Note" FROM "Orders" WHERE "Id" = 1002', expect=[("new",)])),
         after_contract=column('"Orders"', "Note", None),
         after_rollback=none('SELECT "Id" FROM "Orders" WHERE "Note" IS DISTINCT FROM \'n\' || "Id"')),
    Case("alter_column integer to bigint, NOT NULL, its default and its index", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "hits", "type": "bigint", "from_type": "integer",
           "from_not_null": True, "from_default": "0", "indexes": [{"name": "posts_hits", "columns": ["hits"]}]}],
         old_writes=("INSERT INTO posts (id, title, hits) VALUES (1001, 'old', 5)",
                     "INSERT INTO posts (id, title) VALUES (1002, 'old default')",
                     "UPDATE posts SET hits = 6 WHERE id = 1"),
         new_writes=("INSERT INTO posts (id, title, _rollout_hits) VALUES (1003, 'new', 8)",
                     "UPDATE posts SET _rollout_hits = 9 WHERE id = 2"),
         after_expand=every(
             none("SELECT id FROM posts WHERE _rollout_hits IS DISTINCT FROM hits"),
             column("posts", "_rollout_hits", ("bigint", False, None)),
             reads("INSERT INTO posts (id, title) VALUES (1002, 'old default')",
                   "UPDATE posts SET _rollout_hits = 9 WHERE id = 2",
                   query="SELECT id, hits, _rollout_hits FROM posts WHERE id IN (2, 1002) ORDER BY id",
                   expect=[(2, 9, 9), (1002, 0, 0)]),
             # the old application must read what the new one writes: a value an integer cannot hold is refused
             refused("UPDATE posts SET _rollout_hits = 5000000000 WHERE id = 3", "out of range")),
         after_contract=every(
             column("posts", "hits", ("bigint", True, "0")), column("posts", "_rollout_hits", None),
             reads(query="SELECT indexdef FROM pg_indexes WHERE indexname = 'posts_hits'",
                   expect=[("CREATE INDEX posts_hits ON public.posts USING btree (hits)",)]),
             none("SELECT id FROM posts WHERE hits <> id * 7 AND id <= 300")),
         after_contract_writes=("INSERT INTO posts (id, title, hits) VALUES (1004, 'big', 5000000000)",),
         after_rollback=every(column("posts", "hits", ("integer", True, "0")),
                              none("SELECT id FROM posts WHERE hits <> id * 7"))),
    Case("alter_column integer to bigint, dropping NOT NULL and the default", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "hits", "type": "bigint", "from_type": "integer",
           "from_not_null": True, "not_null": False, "from_default": "0", "default": None,
           "indexes": [{"name": "posts_hits", "columns": ["hits"]}]}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old default')",),
         new_writes=("INSERT INTO posts (id, title, _rollout_hits) VALUES (1002, 'new', NULL)",
                     "UPDATE posts SET _rollout_hits = NULL WHERE id = 1"),
         after_expand=every(
             column("posts", "hits", ("integer", False, "0")),
             reads("UPDATE posts SET _rollout_hits = NULL WHERE id = 1",
                   query="SELECT hits, _rollout_hits FROM posts WHERE id = 1", expect=[(None, None)])),
         after_contract=every(column("posts", "hits", ("bigint", False, None)),
                              reads("INSERT INTO posts (id, title) VALUES (1003, 'x')",
                                    query="SELECT hits FROM posts WHERE id = 1003", expect=[(None,)])),
         after_rollback=every(column("posts", "hits", ("integer", True, "0")),
                              none("SELECT id FROM posts WHERE hits <> id * 7"))),
    Case("alter_column text to integer with up and down", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "amount", "type": "integer", "from_type": "text",
           "up": "nullif(trim(amount), '')::integer", "down": "amount::text"}],
         old_writes=("INSERT INTO posts (id, title, amount) VALUES (1001, 'old', ' 12 ')",
                     "UPDATE posts SET amount = '7' WHERE id = 1"),
         new_writes=("INSERT INTO posts (id, title, _rollout_amount) VALUES (1002, 'new', 3)",
                     "UPDATE posts SET _rollout_amount = NULL WHERE id = 3"),
         after_expand=every(
             none("SELECT id FROM posts WHERE _rollout_amount IS DISTINCT FROM nullif(trim(amount), '')::integer"),
             # the backfill filled the new column and left the old values as they were (' 4 ' stays)
             reads(query="SELECT amount, _rollout_amount FROM posts WHERE id IN (1, 3, 4) ORDER BY id",
                   expect=[("", None), ("3", 3), (" 4 ", 4)]),
             reads("INSERT INTO posts (id, title, amount) VALUES (1001, 'old', ' 12 ')",
                   "INSERT INTO posts (id, title, _rollout_amount) VALUES (1002, 'new', 3)",
                   "UPDATE posts SET _rollout_amount = NULL WHERE id = 3",
                   "UPDATE posts SET _rollout_amount = 40 WHERE id = 4",
                   "UPDATE posts SET title = 'edited' WHERE id = 3",
                   query="SELECT id, amount, _rollout_amount FROM posts WHERE id IN (3, 4, 1001, 1002) ORDER BY id",
                   expect=[(3, None, None), (4, "40", 40), (1001, " 12 ", 12), (1002, "3", 3)]),
             refused("INSERT INTO posts (id, title, amount) VALUES (1003, 'old', 'twelve')", "invalid input syntax")),
         after_contract=every(column("posts", "amount", ("integer", False, None)),
                              reads(query="SELECT amount FROM posts WHERE id IN (1, 4) ORDER BY id",
                                    expect=[(None,), (4,)])),
         after_rollback=every(column("posts", "amount", ("text", False, None)),
                              reads(query="SELECT amount FROM posts WHERE id IN (1, 2, 4) ORDER BY id",
                                    expect=[(None,), (None,), ("4",)]))),
    Case('alter_column on a mixed-case table: "Orders"."Total" integer to bigint', TABLES,
         [{"op": "alter_column", "table": "Orders", "column": "Total", "type": "bigint", "from_type": "integer"}],
         old_writes=('INSERT INTO "Orders" ("Id", "Total") VALUES (1001, 5)',),
         new_writes=('INSERT INTO "Orders" ("Id", "_rollout_Total") VALUES (1002, 6)',
                     'UPDATE "Orders" SET "_rollout_Total" = NULL WHERE "Id" = 1'),
         after_expand=every(
             none('SELECT "Id" FROM "Orders" WHERE "_rollout_Total" IS DISTINCT FROM "Total"'),
             reads('UPDATE "Orders" SET "_rollout_Total" = NULL WHERE "Id" = 1',
                   query='SELECT "Total", "_rollout_Total" FROM "Orders" WHERE "Id" = 1', expect=[(None, None)])),
         after_contract=column('"Orders"', "Total", ("bigint", False, None)),
         after_rollback=every(column('"Orders"', "Total", ("integer", False, None)),
                              none('SELECT "Id" FROM "Orders" WHERE "Total" IS DISTINCT FROM '
                                   'CASE WHEN "Id" % 5 = 0 THEN NULL ELSE "Id" * 100 END'))),
    Case("alter_column SET NOT NULL: in the contract", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "author_id", "not_null": True}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old, without an author')",),
         new_writes=("INSERT INTO posts (id, title, author_id) VALUES (1002, 'new', 1)",),
         after_expand=column("posts", "author_id", ("bigint", False, None)),
         after_contract=every(column("posts", "author_id", ("bigint", True, None)),
                              refused("INSERT INTO posts (id, title) VALUES (1003, 'x')", "null value"))),
    Case("alter_column SET NOT NULL, up filling the NULLs: exact rollback", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "body", "not_null": True, "up": "'about ' || title"}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')", "UPDATE posts SET body = NULL WHERE id = 1"),
         new_writes=("INSERT INTO posts (id, title, body) VALUES (1002, 'new', 'new body')",),
         after_expand=every(none("SELECT id FROM posts WHERE body IS NULL"),
                            none("SELECT id FROM posts WHERE id % 3 = 0 AND body IS DISTINCT FROM 'about ' || title"),
                            reads("INSERT INTO posts (id, title) VALUES (1003, 'x')", "UPDATE posts SET body = NULL "
                                  "WHERE id = 2", "INSERT INTO posts (id, title, body) VALUES (1004, 'y', 'mine')",
                                  query="SELECT id, body FROM posts WHERE id IN (2, 1003, 1004) ORDER BY id",
                                  expect=[(2, "about post 2"), (1003, "about x"), (1004, "mine")])),
         after_contract=every(column("posts", "body", ("text", True, None)),
                              refused("INSERT INTO posts (id, title) VALUES (1005, 'x')", "null value")),
         after_rollback=every(column("posts", "body", ("text", False, None)),
                              none("SELECT id FROM posts WHERE body IS DISTINCT FROM "
                                   "CASE WHEN id % 3 = 0 THEN NULL ELSE 'body ' || id END"))),
    Case("alter_column DROP NOT NULL: in the expand phase", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "title", "not_null": False}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'old')",),
         new_writes=("INSERT INTO posts (id) VALUES (1002)",),
         after_expand=column("posts", "title", ("text", False, None)),
         after_rollback=column("posts", "title", ("text", True, None))),
    Case("alter_column SET DEFAULT", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "score", "default": "1.5"}],
         old_writes=("INSERT INTO posts (id, title, score) VALUES (1001, 'old', 0.5)",),
         new_writes=("INSERT INTO posts (id, title) VALUES (1002, 'new')",),
         after_expand=reads("INSERT INTO posts (id, title) VALUES (1002, 'new')",
                            query="SELECT score FROM posts WHERE id = 1002", expect=[(1.5,)]),
         after_rollback=column("posts", "score", ("real", False, None))),
    Case("alter_column DROP DEFAULT", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "status", "default": None, "from_default": "'draft'",
           "from_not_null": True}],
         new_writes=("INSERT INTO posts (id, title, status) VALUES (1002, 'new', 'x')",),
         after_expand=column("posts", "status", ("text", True, None)),
         after_rollback=column("posts", "status", ("text", True, "'draft'::text"))),
    # refused before anything changes
    Case("drop_column described wrongly (its type)", TABLES,
         [{"op": "drop_column", "table": "posts", "column": "score", "type": "text"}],
         fails="preconditions failed, nothing was changed: posts_score_as_described: found 1 row"),
    Case("alter_column of a column with an index it does not rebuild", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "hits", "type": "bigint", "from_type": "integer",
           "from_not_null": True, "from_default": "0"}],
         fails="posts_hits_keeps_its_dependents: found 1 row"),
    Case("rename_column of a column with an index it does not rebuild", TABLES,
         [{"op": "rename_column", "table": "posts", "column": "author_id", "to": "writer_id", "type": "bigint"}],
         fails="posts_author_id_keeps_its_dependents: found 1 row"),
    Case("alter_column SET NOT NULL whose up leaves NULLs", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "body", "not_null": True, "up": "nullif(title, title)"}],
         fails="posts_body_fillable: found 100 rows"),
    Case("alter_column SET NOT NULL with NULL rows", TABLES,
         [{"op": "alter_column", "table": "posts", "column": "body", "not_null": True}],
         fails="posts_body_has_no_nulls: found 100 rows"),
    # a value up cannot convert stops the backfill with the row's key; rollback undoes the expand
    Case("alter_column with a value that cannot convert", TABLES + "UPDATE posts SET amount = 'twelve' WHERE id = 8;",
         [{"op": "alter_column", "table": "posts", "column": "amount", "type": "integer", "from_type": "text",
           "up": "nullif(trim(amount), '')::integer"}],
         fails='row (id=8) cannot be converted: invalid input syntax for type integer: "twelve"', fails_midway=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lifecycle(case, tmp_path, dsn, db):
    run(case, tmp_path, dsn, db)


def test_a_fixed_row_lets_the_stopped_backfill_finish(tmp_path, dsn, db):
    """After the stop, fixing the row and applying again converts the rest from the checkpoint."""
    db.execute(TABLES + "UPDATE posts SET amount = 'twelve' WHERE id = 8;")
    case = Case("retry", "", [{"op": "alter_column", "table": "posts", "column": "amount", "type": "integer",
                               "from_type": "text", "up": "nullif(trim(amount), '')::integer"}])
    rollout = Rollout(write_plan(tmp_path, plan_for(case)), dsn)
    assert "cannot be converted" in rollout("apply").output
    db.execute("UPDATE posts SET amount = '12' WHERE id = 8")
    again = rollout("apply")
    assert again.exit_code == 0, again.output
    none("SELECT id FROM posts WHERE _rollout_amount IS DISTINCT FROM nullif(trim(amount), '')::integer")(db)


# -- names PostgreSQL would cut ---------------------------------------------------------------------

LONG = "c" * 64


@pytest.mark.parametrize("operation, message", [
    ({"op": "add_column", "table": "posts", "column": LONG, "type": "text"},
     f"the column name '{LONG}' is longer than PostgreSQL's 63 bytes"),
    ({"op": "rename_column", "table": "posts", "column": "title", "to": "d" * 64, "type": "text"},
     "the new column name '" + "d" * 64 + "' is longer than PostgreSQL's 63 bytes (64)"),
    ({"op": "alter_column", "table": "posts", "column": "c" * 56, "type": "bigint", "from_type": "integer"},
     "the generated name '_rollout_" + "c" * 56 + "' is longer than PostgreSQL's 63 bytes"),
    ({"op": "add_column", "table": "t" * 30, "column": "c" * 30, "type": "int", "up": "1"},
     "the generated name '_rollout_sync_" + "t" * 30 + "_" + "c" * 30 + "' is longer"),
    ({"op": "drop_column", "table": "s" * 64 + ".posts", "column": "c", "type": "int"},
     "the table name"),
    ({"op": "add_column", "tables": ["posts", "t" * 50], "column": "c" * 10, "type": "int", "on_update": "1"},
     "the generated name '" + "t" * 50 + "_set_" + "c" * 10 + "' is longer"),
])
def test_names_over_63_bytes_are_refused_when_the_plan_loads(operation, message, tmp_path):
    case = Case("long", "", [operation])
    checked = Rollout(write_plan(tmp_path, plan_for(case)), None)("check")
    assert checked.exit_code == 2, checked.output
    assert message in checked.output, checked.output


@pytest.mark.parametrize("operation, message", [
    ({"op": "add_column", "table": "posts", "column": "c", "type": "int", "not_null": True},
     "not_null needs a default or up"),
    ({"op": "add_column", "table": "posts", "column": "c", "type": "int", "default": "1", "up": "2"},
     "give default or up, not both"),
    ({"op": "add_column", "table": "posts", "tables": ["a"], "column": "c", "type": "int"}, "give table or tables"),
    ({"op": "add_column", "column": "c", "type": "int"}, "give table or tables"),
    ({"op": "add_column", "tables": ["a", "b", "a"], "column": "c", "type": "int"}, "a table is listed twice"),
    ({"op": "add_column", "tables": ["a", "b"], "column": "c", "type": "int", "on_update": "now(); DROP TABLE a"},
     "is not an SQL expression"),
    ({"op": "add_column", "table": "a", "column": "c", "type": "int", "up": "1", "on_update": "2"},
     "give up or on_update, not both"),
    ({"op": "add_column", "table": "posts", "column": "c", "type": "int); DROP TABLE posts; --"}, "not a type name"),
    ({"op": "add_column", "table": "posts", "column": "c", "type": "int", "up": "1); DROP TABLE posts; SELECT (1"},
     "is not a single SQL expression"),
    ({"op": "drop_column", "table": "posts", "column": "c", "type": "int", "not_null": True}, "needs `fill`"),
    ({"op": "drop_column", "table": "posts", "column": "c", "type": "uuid", "fill": "gen_random_uuid()"},
     "must be a constant"),
    ({"op": "alter_column", "table": "posts", "column": "c", "type": "bigint"}, "needs from_type"),
    ({"op": "alter_column", "table": "posts", "column": "c", "up": "c + 1"}, "up goes with a type change (type), or with not_null: true"),
    ({"op": "alter_column", "table": "posts", "column": "c", "type": "text", "from_type": "int",
      "down": "c::int + other"}, "may read only the column 'c' (it names other)"),
    ({"op": "alter_column", "table": "posts", "column": "c", "default": "1", "from_default": "1"},
     "changes nothing"),
])
def test_operations_that_cannot_work_are_refused_when_the_plan_loads(operation, message, tmp_path):
    checked = Rollout(write_plan(tmp_path, plan_for(Case("bad", "", [operation]))), None)("check")
    assert checked.exit_code == 2 and message in checked.output, checked.output


# -- properties: both shapes read what either application writes ------------------------------------

def _expanded(tmp_path, dsn, db, setup: str, operation: dict) -> None:
    db.execute(setup)
    applied = Rollout(write_plan(tmp_path, plan_for(Case("p", "", [operation]))), dsn)("apply")
    assert applied.exit_code == 0, applied.output


def _roundtrip(db, statements: list[tuple[str, tuple]], query: str) -> tuple:
    with db.transaction(force_rollback=True):
        for statement, params in statements:
            db.execute(statement, params)
        return db.execute(query).fetchone()


needs_hypothesis = pytest.mark.skipif(given is None, reason="hypothesis is not installed (pip install -e '.[test]')")
INT = st.integers(-2**31, 2**31 - 1) if given else None


@needs_hypothesis
def test_integer_to_bigint_reads_back_what_either_application_wrote(tmp_path, dsn, db):
    _expanded(tmp_path, dsn, db, "CREATE TABLE n (id bigint PRIMARY KEY, v integer); "
              "INSERT INTO n SELECT g, g FROM generate_series(1, 50) AS g;",
              {"op": "alter_column", "table": "n", "column": "v", "type": "bigint", "from_type": "integer"})
    both = "SELECT v, _rollout_v FROM n WHERE id = 1"
    inserted = "SELECT v, _rollout_v FROM n WHERE id = 1000"

    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(old=st.one_of(st.none(), INT), new=st.one_of(st.none(), INT))
    def check(old, new):
        # the old application writes v; the new one reads the same value in the bigint column
        assert _roundtrip(db, [("UPDATE n SET v = %s WHERE id = 1", (old,))], both) == (old, old)
        assert _roundtrip(db, [("INSERT INTO n (id, v) VALUES (1000, %s)", (old,))], inserted) == (old, old)
        # the new application writes the bigint column; the old one reads the same value in v
        assert _roundtrip(db, [("UPDATE n SET _rollout_v = %s WHERE id = 1", (new,))], both) == (new, new)
        if new is not None:  # an insert's NULL reads as "not written": v decides
            assert _roundtrip(db, [("INSERT INTO n (id, _rollout_v) VALUES (1000, %s)", (new,))], inserted) == (new, new)
        # one after the other: the last writer wins in both shapes
        assert _roundtrip(db, [("UPDATE n SET v = %s WHERE id = 1", (old,)),
                               ("UPDATE n SET _rollout_v = %s WHERE id = 1", (new,))], both) == (new, new)

    check()


@needs_hypothesis
def test_text_to_integer_up_and_down_agree_for_any_padded_number(tmp_path, dsn, db):
    _expanded(tmp_path, dsn, db, "CREATE TABLE m (id bigint PRIMARY KEY, amount text); INSERT INTO m VALUES (1, '1');",
              {"op": "alter_column", "table": "m", "column": "amount", "type": "integer", "from_type": "text",
               "up": "nullif(trim(amount), '')::integer", "down": "amount::text"})
    both = "SELECT amount, _rollout_amount FROM m WHERE id = 1"

    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=INT, left=st.integers(0, 3), right=st.integers(0, 3), new=st.one_of(st.none(), INT))
    def check(value, left, right, new):
        written = " " * left + str(value) + " " * right
        # what the old application wrote stays as written; the new column holds its number
        assert _roundtrip(db, [("UPDATE m SET amount = %s WHERE id = 1", (written,))], both) == (written, value)
        # the new application's number reaches the old column as text (NULL as NULL)
        expect = (None if new is None else str(new), new)
        assert _roundtrip(db, [("UPDATE m SET _rollout_amount = %s WHERE id = 1", (new,))], both) == expect

    check()

