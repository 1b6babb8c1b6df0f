"""orchestrator.dependents against a real PostgreSQL: what breaks when a table or its columns
are dropped, renamed or retyped. Each case builds a schema, asks find_dependents, and, where
it names a statement, runs that statement in a rolled-back transaction to show PostgreSQL
agrees with what was reported (the DROP fails, the ALTER is refused, or it goes through)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest

from orchestrator.dependents import Dependent, find_dependents

USERS = """
CREATE TABLE users (id int PRIMARY KEY, name text NOT NULL DEFAULT '', role text, email text, org int);
CREATE INDEX users_role_idx ON users (role);
"""


@dataclass(frozen=True)
class Case:
    id: str
    setup: str
    table: str
    columns: tuple[str, ...]
    action: str
    expected: frozenset  # (kind, substring of the name, line or None): every finding matches one, each is matched
    statement: str | None = None  # the change itself, run in a rolled-back transaction to check the claims


def case(id, setup, table, columns, action, expected, statement=None) -> Case:
    return Case(id, USERS + setup, table, tuple(columns), action,
                frozenset(e if len(e) == 3 else (*e, None) for e in expected), statement)


TRIGGER = """
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- keeps role in step
  IF NEW.role IS NULL THEN
    NEW.role := 'member';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER audit_trg BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit();
"""

CASES = [
    # --- what pg_depend records ---------------------------------------------------------
    case("view on a column", "CREATE VIEW active_users AS SELECT id, role FROM users;",
         "users", ["role"], "drop", {("view", "view public.active_users")},
         "ALTER TABLE users DROP COLUMN role"),
    case("view on the table", "CREATE VIEW everyone AS SELECT count(*) FROM users;",
         "users", [], "drop", {("view", "view public.everyone")}, "DROP TABLE users"),
    case("view on another column is not reported", "CREATE VIEW names AS SELECT name FROM users;",
         "users", ["role"], "drop", set(), "ALTER TABLE users DROP COLUMN role"),
    case("materialized view", "CREATE MATERIALIZED VIEW roles AS SELECT DISTINCT role FROM users;",
         "users", ["role"], "drop", {("materialized view", "materialized view public.roles")},
         "ALTER TABLE users DROP COLUMN role"),
    case("rule on another table",
         "CREATE TABLE signups (id int); "
         "CREATE RULE promote AS ON INSERT TO signups DO ALSO UPDATE users SET role = 'new' WHERE id = NEW.id;",
         "users", ["role"], "drop", {("rule", "rule promote on public.signups")},
         "ALTER TABLE users DROP COLUMN role"),
    case("policy (USING and WITH CHECK)",
         "CREATE POLICY own_org ON users USING (org = 1) WITH CHECK (role <> 'owner');",
         "users", ["role"], "drop", {("policy", "policy own_org on public.users")},
         "ALTER TABLE users DROP COLUMN role"),
    case("generated column",
         "ALTER TABLE users ADD COLUMN domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED;",
         "users", ["email"], "drop", {("generated column", "generated column public.users.domain")},
         "ALTER TABLE users DROP COLUMN email"),
    case("dropping the generated column itself is harmless",
         "ALTER TABLE users ADD COLUMN domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED;",
         "users", ["domain"], "drop", set(), "ALTER TABLE users DROP COLUMN domain"),
    case("multi-column unique index (the single-column index, NOT NULL and default are not reported)",
         "CREATE UNIQUE INDEX users_org_email ON users (org, email); CREATE INDEX users_name_idx ON users (name);",
         "users", ["email", "name"], "drop", {("index", "index public.users_org_email")},
         "ALTER TABLE users DROP COLUMN email, DROP COLUMN name"),
    case("multi-column unique constraint",
         "ALTER TABLE users ADD CONSTRAINT one_email_per_org UNIQUE (org, email);",
         "users", ["email"], "drop", {("unique constraint", "unique constraint one_email_per_org on public.users")},
         "ALTER TABLE users DROP COLUMN email"),
    case("expression index", "CREATE INDEX users_label ON users ((name || ' <' || email || '>'));",
         "users", ["email"], "drop", {("index", "index public.users_label")},
         "ALTER TABLE users DROP COLUMN email"),
    case("partial index", "CREATE INDEX users_admin_names ON users (name) WHERE role = 'admin';",
         "users", ["role"], "drop", {("index", "index public.users_admin_names")},
         "ALTER TABLE users DROP COLUMN role"),
    case("primary key column", "", "users", ["id"], "drop", {("primary key", "primary key users_pkey")},
         "ALTER TABLE users DROP COLUMN id"),
    case("foreign key from another table to the column",
         "CREATE TABLE posts (id int, author int REFERENCES users (id));",
         "users", ["id"], "drop", {("foreign key", "foreign key posts_author_fkey on public.posts"),
                                   ("primary key", "primary key users_pkey")},
         "ALTER TABLE users DROP COLUMN id"),
    case("foreign key to the table when dropping it",
         "CREATE TABLE posts (id int, author int REFERENCES users (id));",
         "users", [], "drop", {("foreign key", "foreign key posts_author_fkey on public.posts")},
         "DROP TABLE users"),
    case("the table's own objects go with it", TRIGGER + """
         CREATE POLICY p ON users USING (role = 'x');
         ALTER TABLE users ADD CHECK (org > 0);
         CREATE STATISTICS users_stats ON org, email FROM users;""",
         "users", [], "drop", set(), "DROP TABLE users"),
    case("a sequence the column owns, used by another table's default",
         "ALTER TABLE users ADD COLUMN serial_no serial; "
         "CREATE TABLE tickets (no int DEFAULT nextval('users_serial_no_seq'));",
         "users", ["serial_no"], "drop", {("column default", "column default public.tickets.no")},
         "ALTER TABLE users DROP COLUMN serial_no"),
    case("check constraint over two columns", "ALTER TABLE users ADD CONSTRAINT sane CHECK (org > 0 OR role = 'root');",
         "users", ["role"], "drop", {("check constraint", "check constraint sane on public.users")},
         "ALTER TABLE users DROP COLUMN role"),
    case("check constraint on the dropped column alone is not reported",
         "ALTER TABLE users ADD CONSTRAINT role_set CHECK (role <> '');",
         "users", ["role"], "drop", set(), "ALTER TABLE users DROP COLUMN role"),
    case("extended statistics", "CREATE STATISTICS users_org_role ON org, role FROM users;",
         "users", ["role"], "drop", {("statistics", "statistics public.users_org_role")},
         "ALTER TABLE users DROP COLUMN role"),
    case("trigger with UPDATE OF the column", "CREATE TRIGGER touch BEFORE UPDATE OF role ON users "
         "FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();",
         "users", ["role"], "drop", {("trigger", "trigger touch on public.users")},
         "ALTER TABLE users DROP COLUMN role"),
    case("trigger with a WHEN clause", "CREATE TRIGGER touch BEFORE UPDATE ON users FOR EACH ROW "
         "WHEN (OLD.role IS DISTINCT FROM NEW.role) EXECUTE FUNCTION suppress_redundant_updates_trigger();",
         "users", ["role"], "drop", {("trigger", "trigger touch on public.users")},
         "ALTER TABLE users DROP COLUMN role"),
    case("SQL-standard body (BEGIN ATOMIC)", """
         CREATE FUNCTION admins() RETURNS bigint LANGUAGE sql
         BEGIN ATOMIC SELECT count(*) FROM users WHERE role = 'admin'; END;""",
         "users", ["role"], "drop", {("function", "function public.admins()")},
         "ALTER TABLE users DROP COLUMN role"),
    case("SQL-standard body (RETURN) and the table's row type in a signature",
         "CREATE FUNCTION label(u users) RETURNS text LANGUAGE sql RETURN u.name;",
         "users", [], "drop", {("function", "function public.label(users)")}, "DROP TABLE users"),
    case("partitions go with a dropped partitioned table", """
         CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
         CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');""",
         "events", [], "drop", {("partition", "partition public.events_2024")}, "DROP TABLE events"),
    case("a view on a partition uses the partitioned table's column", """
         CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
         CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE VIEW this_year AS SELECT id FROM events_2024;""",
         "events", ["id"], "drop", {("view", "view public.this_year")}, "ALTER TABLE events DROP COLUMN id"),

    # --- retype: refused, re-checked, or rebuilt unharmed -----------------------------------
    case("retype: a view refuses it, indexes are rebuilt", """
         CREATE VIEW active_users AS SELECT id, role FROM users;
         CREATE UNIQUE INDEX users_org_role ON users (org, role);
         CREATE STATISTICS users_org_role_stats ON org, role FROM users;""",
         "users", ["role"], "retype", {("view", "view public.active_users")},
         "ALTER TABLE users ALTER COLUMN role TYPE varchar(40)"),
    case("retype: a policy refuses it", "CREATE POLICY p ON users USING (role = 'x');",
         "users", ["role"], "retype", {("policy", "policy p on public.users")},
         "ALTER TABLE users ALTER COLUMN role TYPE varchar(40)"),
    case("retype: a check constraint is re-checked (and here fails)",
         "ALTER TABLE users ADD CONSTRAINT sane CHECK (org > 0 OR role = 'root');",
         "users", ["role"], "retype", {("check constraint", "check constraint sane")},
         "ALTER TABLE users ALTER COLUMN role TYPE int USING 0"),
    case("retype: plpgsql uses only may break", TRIGGER + "CREATE INDEX users_lower_role ON users (lower(role));",
         "users", ["role"], "retype", {("trigger", "trigger audit_trg", 4), ("trigger", "trigger audit_trg", 5)},
         "ALTER TABLE users ALTER COLUMN role TYPE varchar(40)"),

    case("retype: a foreign key is re-validated (int to bigint goes through)",
         "CREATE TABLE posts (id int, author int REFERENCES users (id));",
         "users", ["id"], "retype", {("foreign key", "foreign key posts_author_fkey on public.posts")},
         "ALTER TABLE users ALTER COLUMN id TYPE bigint"),
    case("retype: a SQL-standard body refuses it", """
         CREATE FUNCTION admins() RETURNS bigint LANGUAGE sql
         BEGIN ATOMIC SELECT count(*) FROM users WHERE role = 'admin'; END;""",
         "users", ["role"], "retype", {("function", "function public.admins()")},
         "ALTER TABLE users ALTER COLUMN role TYPE varchar(40)"),
    case("retype: another table storing the row type refuses it", "CREATE TABLE snapshots (u users);",
         "users", ["role"], "retype", {("column", "column public.snapshots.u")},
         "ALTER TABLE users ALTER COLUMN role TYPE varchar(40)"),
    case("drop: another table storing the row type loses the field", "CREATE TABLE snapshots (u users);",
         "users", ["role"], "drop", {("column", "column public.snapshots.u")},
         "ALTER TABLE users DROP COLUMN role"),
    case("drop table: an inheritance child blocks it", "CREATE TABLE bots (token text) INHERITS (users);",
         "users", [], "drop", {("table", "table public.bots")}, "DROP TABLE users"),

    # --- rename: pg_depend follows the column; text bodies do not ---------------------------
    case("rename: views, policies and SQL-standard bodies follow, plpgsql does not", TRIGGER + """
         CREATE VIEW active_users AS SELECT id, role FROM users;
         CREATE POLICY p ON users USING (role = 'x');
         CREATE FUNCTION admins() RETURNS bigint LANGUAGE sql
         BEGIN ATOMIC SELECT count(*) FROM users WHERE role = 'admin'; END;""",
         "users", ["role"], "rename", {("trigger", "trigger audit_trg on public.users (function public.audit())", 4),
                                       ("trigger", "trigger audit_trg", 5)},
         "ALTER TABLE users RENAME COLUMN role TO kind"),
    case("rename the table: string bodies break",
         "CREATE FUNCTION n() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM users';"
         "CREATE VIEW everyone AS SELECT count(*) FROM users;",
         "users", [], "rename", {("function", "function public.n()", 1)}, "ALTER TABLE users RENAME TO members"),

    # --- function bodies ----------------------------------------------------------------------
    case("plpgsql trigger function using NEW.col", TRIGGER, "users", ["role"], "drop",
         {("trigger", "trigger audit_trg on public.users (function public.audit())", 4),
          ("trigger", "trigger audit_trg on public.users (function public.audit())", 5)},
         "ALTER TABLE users DROP COLUMN role"),
    case("plpgsql function with a query on the column", """
         CREATE FUNCTION admin_names() RETURNS SETOF text LANGUAGE plpgsql AS $$
         DECLARE
           r record;
         BEGIN
           FOR r IN SELECT name, role FROM users LOOP
             IF r.role = 'admin' THEN
               RETURN NEXT r.name;
             END IF;
           END LOOP;
           UPDATE users
              SET role = 'member'
            WHERE role IS NULL;
           INSERT INTO users (id, role) VALUES (0, 'x') ON CONFLICT (id) DO UPDATE SET role = 'y';
         END $$;""",
         "users", ["role"], "drop",
         {("function", "function public.admin_names()", line) for line in (5, 6, 11, 12, 13)}),
    case("plpgsql function using the table but not the column", """
         CREATE FUNCTION names() RETURNS SETOF text LANGUAGE plpgsql AS $$
         BEGIN
           RETURN QUERY SELECT u.name FROM users AS u JOIN teams AS t ON t.role = u.name WHERE t.role <> '';
         END $$;
         CREATE TABLE teams (role text);""",
         "users", ["role"], "drop", set()),
    case("plpgsql: an INSERT without a column list, a %TYPE declaration", """
         CREATE FUNCTION add_user(i int) RETURNS void LANGUAGE plpgsql AS $$
         DECLARE
           default_role users.role%TYPE := 'member';
         BEGIN
           INSERT INTO users VALUES (i, 'x', default_role, NULL, 1);
         END $$;""",
         "users", ["role"], "drop", {("function", "function public.add_user(integer)", 3),
                                     ("function", "function public.add_user(integer)", 5)}),
    case("plpgsql function using the table, when the table is dropped", """
         CREATE FUNCTION names() RETURNS SETOF text LANGUAGE plpgsql AS $$
         BEGIN
           RETURN QUERY SELECT name FROM users;
         END $$;""",
         "users", [], "drop", {("function", "function public.names()", 3)}),
    case("LANGUAGE sql with a string body", """
         CREATE FUNCTION roles() RETURNS SETOF text LANGUAGE sql AS $$
           SELECT name FROM users;
           SELECT role
             FROM users $$;""",
         "users", ["role"], "drop", {("function", "function public.roles()", 3)}),
    case("a function in another schema", """
         CREATE SCHEMA reports;
         CREATE FUNCTION reports.by_role(r text) RETURNS bigint LANGUAGE plpgsql AS $$
         BEGIN RETURN (SELECT count(*) FROM public.users WHERE role = r); END $$;
         CREATE TABLE reports.users (role text);
         CREATE FUNCTION reports.own(r text) RETURNS bigint LANGUAGE plpgsql AS $$
         BEGIN RETURN (SELECT count(*) FROM reports.users WHERE role = r); END $$;""",
         "public.users", ["role"], "drop", {("function", "function reports.by_role(text)", 2)}),
    case("a mixed-case quoted table and column", """
         CREATE SCHEMA shop;
         CREATE TABLE shop."Orders" (id int, "Total" numeric, total numeric);
         CREATE VIEW shop.big AS SELECT id FROM shop."Orders" WHERE "Total" > 100;
         CREATE FUNCTION shop.sum_orders() RETURNS numeric LANGUAGE plpgsql AS $$
         BEGIN
           RETURN (SELECT sum(o."Total") FROM shop."Orders" AS o);
         END $$;
         CREATE FUNCTION shop.lower_total() RETURNS numeric LANGUAGE plpgsql AS $$
         BEGIN
           RETURN (SELECT sum(total) FROM shop."Orders");
         END $$;""",
         'shop."Orders"', ["Total"], "drop", {("view", 'view shop.big'),
                                             ("function", "function shop.sum_orders()", 3)},
         'ALTER TABLE shop."Orders" DROP COLUMN "Total"'),
    case("the column only in a string literal, a comment and dynamic SQL", """
         CREATE FUNCTION chatty() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           -- role: see users
           /* role */
           RAISE NOTICE 'role of users';
           PERFORM count(*) FROM users WHERE name = 'role';
           EXECUTE 'SELECT role FROM users';
         END $$;""",
         "users", ["role"], "drop", set()),
    case("a NEW.col in a trigger function of another table is not the table's", """
         CREATE TABLE teams (id int, role text);
         CREATE FUNCTION team_audit() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           UPDATE users SET name = NEW.role WHERE id = NEW.id;
           RETURN NEW;
         END $$;
         CREATE TRIGGER team_audit BEFORE INSERT ON teams FOR EACH ROW EXECUTE FUNCTION team_audit();""",
         "users", ["role"], "drop", set()),
    case("an unparsable body that mentions the column", """
         SET check_function_bodies = off;
         CREATE FUNCTION broken() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN
           RETURN (SELECT max(role) FROM users;
         END $$;
         CREATE FUNCTION broken_elsewhere() RETURNS int LANGUAGE plpgsql AS $$ BEGIN IF users THEN END $$;
         RESET check_function_bodies;""",
         "users", ["role"], "drop", {("function", "function public.broken()")}),
    case("an unparsable SQL body that mentions the table and the column", """
         SET check_function_bodies = off;
         CREATE FUNCTION half_written() RETURNS void LANGUAGE sql AS 'SELECT FROM users WHERE role ???';
         RESET check_function_bodies;""",
         "users", ["role"], "drop", {("function", "function public.half_written()")}),
]


def _matches(dependent: Dependent, expected) -> bool:
    kind, name, line = expected
    return dependent.kind == kind and name in dependent.name and (line is None or dependent.line == line)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_find_dependents(db, c: Case):
    db.execute(c.setup)
    found = find_dependents(db, c.table, c.columns, action=c.action)
    unexpected = [d for d in found if not any(_matches(d, e) for e in c.expected)]
    missing = [e for e in c.expected if not any(_matches(d, e) for d in found)]
    assert not unexpected and not missing, f"unexpected: {unexpected}\nmissing: {missing}"
    assert all(d.detail for d in found)
    if c.statement:
        _check_against_postgresql(db, c.statement, found)


def _check_against_postgresql(db, statement: str, found: list[Dependent]) -> None:
    """Run the statement and roll back: a reported "DROP fails" must fail that way, a
    reported refusal must be refused, and otherwise the statement must go through."""
    if any("the DROP fails" in d.detail for d in found):
        expected_error = psycopg.errors.DependentObjectsStillExist
    elif any("refuses" in d.detail for d in found):
        expected_error = psycopg.errors.FeatureNotSupported
    elif any("re-checks it" in d.detail for d in found):
        expected_error = psycopg.errors.Error
    else:
        with db.transaction():
            db.execute(statement)
            raise psycopg.Rollback()
        return
    with pytest.raises(expected_error), db.transaction():
        db.execute(statement)


def test_the_trigger_finding_is_what_postgresql_does(db):
    """Dropping the column the trigger reads is accepted, and then every INSERT fails,
    with PostgreSQL's error context naming the line find_dependents reported."""
    db.execute(USERS + TRIGGER)
    found = find_dependents(db, "users", ("role",), action="drop")
    line = min(d.line for d in found if d.kind == "trigger")
    assert line == 4 and "NEW.role" in next(d.detail for d in found if d.line == line)
    with db.transaction():
        db.execute("ALTER TABLE users DROP COLUMN role")
        with pytest.raises(psycopg.errors.UndefinedColumn) as error, db.transaction():
            db.execute("INSERT INTO users (id, name) VALUES (1, 'ada')")
        assert 'record "new" has no field "role"' in str(error.value)
        assert f"PL/pgSQL function audit() line {line} at IF" in error.value.diag.context
        raise psycopg.Rollback()
    assert db.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass "
                      "AND attname = 'role'").fetchone() == (1,)


def test_a_rename_keeps_views_and_sql_standard_bodies_working(db):
    """Why a rename reports no pg_depend object: after it, the view, the policy and the
    BEGIN ATOMIC function still work, while the string-bodied function fails."""
    db.execute(USERS + """
        INSERT INTO users VALUES (1, 'ada', 'admin', NULL, 1);
        CREATE VIEW active_users AS SELECT id, role FROM users;
        CREATE FUNCTION admins() RETURNS bigint LANGUAGE sql
            BEGIN ATOMIC SELECT count(*) FROM users WHERE role = 'admin'; END;
        CREATE FUNCTION admins_text() RETURNS bigint LANGUAGE sql
            AS 'SELECT count(*) FROM users WHERE role = ''admin''';""")
    found = find_dependents(db, "users", ("role",), action="rename")
    assert [d.name for d in found] == ["function public.admins_text()"]
    with db.transaction():
        db.execute("ALTER TABLE users RENAME COLUMN role TO kind")
        assert db.execute("SELECT role FROM active_users").fetchall() == [("admin",)]
        assert db.execute("SELECT admins()").fetchone() == (1,)
        with pytest.raises(psycopg.errors.UndefinedColumn), db.transaction():
            db.execute("SELECT admins_text()")
        raise psycopg.Rollback()


def test_unknown_tables_and_bad_names_give_nothing(db):
    db.execute(USERS)
    for name in ("nosuch", "nosuchschema.users", "a b", '"unterminated', 'USERS_"'):
        assert find_dependents(db, name, ("role",), action="drop") == []


def test_it_only_reads_inside_a_read_only_transaction(db):
    """The preview calls it in a READ ONLY transaction: no error (a bad name included) may
    abort that transaction, and no transaction id may be assigned."""
    db.execute(USERS + TRIGGER + "CREATE VIEW v AS SELECT role FROM users;")
    with db.transaction():
        db.execute("SET TRANSACTION READ ONLY")
        assert find_dependents(db, "a b", (), action="drop") == []
        for action in ("drop", "rename", "retype"):
            assert find_dependents(db, "users", ("role",), action=action)
        assert find_dependents(db, "users", (), action="drop")
        assert db.execute("SELECT pg_current_xact_id_if_assigned()").fetchone() == (None,)


def test_bad_arguments_are_refused(db):
    with pytest.raises(ValueError):
        find_dependents(db, "users", ("role",), action="truncate")
    with pytest.raises(ValueError):
        find_dependents(db, "users", (), action="retype")


def test_details_say_what_happens(db):
    """The words the preview will show: where in a body, what PostgreSQL will do, and when
    the answer is only a maybe."""
    db.execute(USERS + TRIGGER + """
        CREATE UNIQUE INDEX users_org_role ON users (org, role);
        CREATE VIEW active_users AS SELECT id, role FROM users;
        SET check_function_bodies = off;
        CREATE FUNCTION broken() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT role FROM users; END $$;
        RESET check_function_bodies;""")
    details = {(d.name, d.line): d.detail for d in find_dependents(db, "users", ("role",), action="drop")}
    assert details["trigger audit_trg on public.users (function public.audit())", 4] == "line 4: NEW.role"
    assert details["view public.active_users", None] == (
        "uses column role of table users: the DROP fails unless CASCADE, which drops this view too")
    assert details["index public.users_org_role", None] == (
        "uses column role of table users: dropped with the column, so (org) is no longer unique")
    assert details["function public.broken()", None].startswith("body could not be parsed (")
    assert details["function public.broken()", None].endswith("it may use public.users.role")
    retyped = find_dependents(db, "users", ("role",), action="retype")
    assert {d.kind for d in retyped} == {"trigger", "view", "function"}
    assert all("may break" in d.detail for d in retyped if d.kind == "trigger")
    assert "PostgreSQL refuses" in next(d.detail for d in retyped if d.kind == "view")
