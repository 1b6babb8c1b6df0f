"""Every safe alternative the lint offers runs on a real PostgreSQL and does not take the lock
the finding warned about while it scans or rewrites: PostgreSQL judges the advice, not us.

Each case is a statement a team writes every week on a table that holds rows. `rollout plan`
must report the rule with an alternative; the alternative's statements then run one by one
(those marked for a migration outside a transaction in autocommit), and each statement run in a
transaction is watched: its locks from pg_locks, its sequential scans from
pg_stat_get_xact_numscans, a rewrite from the relfilenode."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pglast
import pytest

from orchestrator.analysis import Lock, analyze
from orchestrator.analysis.catalog import resolve

from ..conftest import Rollout, write_plan

PLAN = """\
version: 1
environments:
  local: {database: embedded}
steps:
  - id: change
    title: a change
    priority: high
    migrate: steps/change
"""
SETUP = """
CREATE TABLE users (id bigint PRIMARY KEY, email text);
CREATE TABLE posts (id bigint PRIMARY KEY, title varchar(255), review text, author_id bigint, body text);
CREATE TABLE "Orders" ("Id" bigint PRIMARY KEY, "Total" numeric(10, 2), "Customer" bigint);
INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, 500) AS g;
INSERT INTO posts SELECT g, 'post ' || g, 'review ' || g, g, 'body' FROM generate_series(1, 500) AS g;
INSERT INTO "Orders" SELECT g, g, g FROM generate_series(1, 500) AS g;
"""


@dataclass(frozen=True)
class Case:
    name: str
    sql: str
    rule: str
    table: str  # the table whose lock the finding warns about (regclass text)
    prelude: str = ""  # what the alternative assumes has run already


CASES = [
    Case("index", "CREATE INDEX posts_title ON posts (title);", "require-concurrent-index-creation", "posts"),
    Case("drop index", "DROP INDEX posts_pkey_copy;", "require-concurrent-index-deletion", "posts"),
    Case("check", "ALTER TABLE posts ADD CONSTRAINT title_short CHECK (length(title) < 300);",
         "constraint-missing-not-valid", "posts"),
    Case("unnamed check", "ALTER TABLE posts ADD CHECK (author_id > 0);", "constraint-missing-not-valid", "posts"),
    Case("foreign key", "ALTER TABLE posts ADD CONSTRAINT posts_author FOREIGN KEY (author_id) REFERENCES users (id);",
         "adding-foreign-key-constraint", "posts"),
    Case("column with a foreign key", "ALTER TABLE posts ADD COLUMN editor_id bigint REFERENCES users (id);",
         "adding-foreign-key-constraint", "posts"),
    Case("validate in the same file", "ALTER TABLE posts ADD CONSTRAINT author_set CHECK (author_id IS NOT NULL) "
         "NOT VALID;\nALTER TABLE posts VALIDATE CONSTRAINT author_set;", "constraint-missing-not-valid", "posts",
         prelude="ALTER TABLE posts ADD CONSTRAINT author_set CHECK (author_id IS NOT NULL) NOT VALID"),
    Case("unique", "ALTER TABLE posts ADD CONSTRAINT posts_review_key UNIQUE (review);",
         "constraint-missing-not-valid", "posts"),
    Case("set not null", "ALTER TABLE posts ALTER COLUMN title SET NOT NULL;", "adding-not-nullable-field", "posts"),
    Case("type change", "ALTER TABLE posts ALTER COLUMN author_id TYPE int;", "changing-column-type", "posts"),
    Case("volatile default", "ALTER TABLE posts ADD COLUMN token uuid DEFAULT gen_random_uuid();",
         "adding-field-with-default", "posts"),
    Case("rename table", "ALTER TABLE users RENAME TO members;", "renaming-table", "users"),
    Case('quoted "Orders" set not null', 'ALTER TABLE "Orders" ALTER COLUMN "Total" SET NOT NULL;',
         "adding-not-nullable-field", '"Orders"'),
    Case('quoted "Orders" check', 'ALTER TABLE "Orders" ADD CONSTRAINT "Total_positive" CHECK ("Total" > 0);',
         "constraint-missing-not-valid", '"Orders"'),
    Case('quoted "Orders" foreign key', 'ALTER TABLE "Orders" ADD FOREIGN KEY ("Customer") REFERENCES users (id);',
         "adding-foreign-key-constraint", '"Orders"'),
]


def finding(tmp_path, dsn, case: Case) -> dict:
    files = {"steps/change/change_01.sql": case.sql + "\n", "steps/change/change_01.rollback.sql": "SELECT 1;\n"}
    result = Rollout(write_plan(tmp_path, PLAN, files), dsn)("plan", "--json")
    findings = json.loads(result.stdout)["steps"][0]["findings"]
    matching = [f for f in findings if f["rule"] == case.rule and f["alternative"]]
    assert matching, f"no {case.rule} finding with an alternative for {case.sql}: {findings}"
    return matching[0]


def parts(alternative: str) -> list[tuple[str, bool]]:
    """(statement, runs in a transaction) for each statement of an alternative, following its
    comments: '-- in a migration of its own' starts a new transaction, and one that says
    'transactional: false' starts a migration that runs outside one."""
    out, buffer, in_transaction = [], [], True

    def flush():
        out.extend((s, in_transaction) for s in pglast.split("\n".join(buffer), with_parser=False) if s.strip())
        buffer.clear()

    for line in alternative.splitlines():
        if line.lstrip().startswith("--"):
            if "in a migration of its own" in line:
                flush()
                in_transaction = "transactional: false" not in line
            continue
        buffer.append(line)
    flush()
    return out


def watched(db, statement: str, table: str | int) -> tuple[Lock | None, int, bool]:
    """Run `statement` in a transaction: the lock it took on `table`, its sequential scans of
    it, and whether it rewrote it."""
    with db.transaction():
        oid, before = db.execute("SELECT oid, relfilenode FROM pg_class WHERE oid = %s::regclass::oid",
                                 (str(table),)).fetchone()
        # the backend's pending counters hold earlier transactions' scans until flushed: take the difference
        scanned = db.execute("SELECT pg_stat_get_xact_numscans(%s)", (oid,)).fetchone()[0]
        db.execute(statement)
        modes = [row[0] for row in db.execute(
            "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' AND relation = %s",
            (oid,))]
        scans = db.execute("SELECT pg_stat_get_xact_numscans(%s)", (oid,)).fetchone()[0] - scanned
        after = db.execute("SELECT relfilenode FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    return Lock.combine([Lock.parse(m) for m in modes]), scans, bool(after) and after[0] != before


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_safe_alternative_runs_and_avoids_the_lock_it_warns_about(case, tmp_path, dsn, db):
    db.execute(SETUP)
    db.execute("CREATE INDEX posts_pkey_copy ON posts (id)")
    warned = original_lock(db, case)
    alternative = finding(tmp_path, dsn, case)["alternative"]
    statements = parts(alternative)
    assert statements, alternative
    if case.prelude:
        db.execute(case.prelude)
    table = db.execute("SELECT %s::regclass::oid", (case.table,)).fetchone()[0]  # followed through renames
    for statement, in_transaction in statements:
        if not in_transaction:  # CONCURRENTLY: autocommit, as its migration runs; its lock is the corpus's
            effect = resolve(db, analyze(statement)[0])
            name = db.execute("SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class AS c "
                              "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = %s", (table,)).fetchone()[0]
            assert not effect.transactional
            assert not (effect.lock_on(name) or Lock.ACCESS_SHARE).covers(warned)  # on the table
            db.execute(statement)
            continue
        lock, scans, rewrote = watched(db, statement, table)
        assert not (lock is not None and lock.covers(warned) and (scans or rewrote)), (
            f"{statement!r} holds {lock.label} on {case.table} while it "
            f"{'rewrites' if rewrote else 'scans'} it: what the finding warned about")
    if case.rule == "renaming-table":  # the old name reads the renamed table until the contract drops it
        assert "CREATE VIEW users AS SELECT * FROM members" in alternative


def original_lock(db, case: Case) -> Lock:
    """The lock the original statement takes on its table, measured and rolled back."""
    with db.transaction(force_rollback=True):
        lock = None
        for statement in pglast.split(case.sql, with_parser=False):
            lock, _, _ = watched(db, statement, case.table)
        return lock
