"""The lifecycle every operation kind goes through, on a real PostgreSQL, with writers of the
old and the new shape: expand → (writers, checks) → rollback → the catalog as before →
expand → contract → (writers, checks) → rollback → the catalog as before.

A case is data: setup SQL (tables that hold rows), the operations as rollout.yaml would list
them, SQL the old application and the new one run while both shapes must work, and checks
after expand and after contract. The step is flagged with one stage, so `apply` stops after
expand (and backfill, and verification) until the flag reaches 100%."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import json

import yaml

from ..conftest import Rollout, write_plan


@dataclass(frozen=True)
class Case:
    name: str
    setup: str
    operations: list[dict]
    old_writes: tuple[str, ...] = ()  # the old application's statements: must work until the contract
    new_writes: tuple[str, ...] = ()  # the new application's: must work from expand on
    after_expand: Callable | None = None  # check(db) after expand
    after_contract: Callable | None = None  # check(db) after the contract
    after_contract_writes: tuple[str, ...] = ()  # what must work once the contract ran
    fails: str | None = None  # apply must fail with this text instead
    extra: dict = field(default_factory=dict)  # more keys for the step (preconditions, allow...)
    fails_midway: bool = False  # the failure comes after the expand ran (a backfill stopped): rollback undoes it
    kept: tuple[tuple, ...] = ()  # rows of schema() a rollback leaves as apply made them (an enum value stays)
    after_rollback: Callable | None = None  # check(db) after the rollback that follows the contract


SCHEMA = """
WITH rel AS (
    SELECT c.oid, c.relname::text AS name, c.relkind::text AS kind FROM pg_class AS c
      JOIN pg_namespace AS n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'rollout') AND c.relname !~ 'yoyo')
SELECT rel.name, rel.kind, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
       pg_get_expr(d.adbin, d.adrelid)
  FROM rel LEFT JOIN pg_attribute AS a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef AS d ON d.adrelid = rel.oid AND d.adnum = a.attnum
UNION ALL
SELECT c.conname::text, c.contype::text, rel.name, pg_get_constraintdef(c.oid), c.convalidated::text, NULL
  FROM pg_constraint AS c JOIN rel ON rel.oid = c.conrelid
UNION ALL
SELECT x.indexrelid::regclass::text, 'index', rel.name, pg_get_indexdef(x.indexrelid), x.indisvalid::text, NULL
  FROM pg_index AS x JOIN rel ON rel.oid = x.indrelid
UNION ALL
SELECT t.tgname::text, 'trigger', rel.name, NULL, NULL, NULL FROM pg_trigger AS t JOIN rel ON rel.oid = t.tgrelid
 WHERE NOT t.tgisinternal
UNION ALL
SELECT t.typname::text, 'enum', string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder), NULL, NULL, NULL
  FROM pg_type AS t JOIN pg_enum AS e ON e.enumtypid = t.oid
 WHERE t.typnamespace <> 'pg_catalog'::regnamespace AND t.typnamespace::regnamespace::text <> 'rollout'
 GROUP BY t.typname
UNION ALL
SELECT p.proname::text, 'function', pg_get_function_identity_arguments(p.oid), NULL, NULL, NULL FROM pg_proc AS p
 WHERE p.pronamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema', 'rollout')
ORDER BY 1, 2, 3
"""


def schema(db) -> list:
    return db.execute(SCHEMA).fetchall()


def plan_for(case: Case) -> str:
    step = {"id": "change", "title": case.name, "priority": "high", "flag": "change_on",
            "operations": case.operations, **case.extra}
    return yaml.safe_dump({
        "version": 1, "environments": {"local": {"database": "embedded"}},
        "flags": {"change_on": {"description": "the new shape"}}, "steps": [step]}, sort_keys=False)


def run(case: Case, tmp_path, dsn, db) -> None:
    db.execute(case.setup)
    before = schema(db)
    rollout = Rollout(write_plan(tmp_path, plan_for(case)), dsn)
    safe_by_construction(rollout)
    applied = rollout("apply")
    if case.fails:
        assert applied.exit_code != 0 and case.fails in applied.output, applied.output
        if case.fails_midway:
            rolled = rollout("rollback", "change")
            assert rolled.exit_code == 0, rolled.output
        assert schema(db) == before
        return
    assert applied.exit_code == 0, applied.output
    expanded(case, db)
    rolled = rollout("rollback", "change")
    assert rolled.exit_code == 0, rolled.output
    before = restored(case, before)
    assert same(schema(db), before), ("the rollback before the contract must restore the catalog exactly", set(schema(db)) ^ set(before))
    assert rollout("apply").exit_code == 0
    expanded(case, db)
    assert rollout("advance", "change").exit_code == 0
    finished = rollout("apply")
    assert finished.exit_code == 0, finished.output
    if case.after_contract:
        case.after_contract(db)
    write(db, case.after_contract_writes)
    undone = rollout("rollback", "change", "--no-backup")
    assert undone.exit_code == 0, undone.output
    assert same(schema(db), before), "the rollback after the contract must restore the catalog exactly"
    if case.after_rollback:
        case.after_rollback(db)
    write(db, case.old_writes)  # the old application works again


def restored(case: Case, before: list) -> list:
    """The catalog a rollback must leave: `before`, but for the rows PostgreSQL cannot undo."""
    kept = {row[:2] for row in case.kept}
    return [row for row in before if row[:2] not in kept] + list(case.kept)


def same(now: list, expected: list) -> bool:
    return sorted(now, key=repr) == sorted(expected, key=repr)


def safe_by_construction(rollout) -> None:
    """The generated SQL, apply and rollback, has no blocking finding and never holds a lock
    that blocks writes while it scans or rewrites a table."""
    preview = json.loads(rollout("plan", "--json").stdout)
    findings = [f for step in preview["steps"] for f in step["findings"]]
    assert not [f for f in findings if f["blocking"]], findings
    for step in preview["steps"]:
        for s in step["statements"]:
            blocks_writes = s["lock"] in ("SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE")
            assert not (blocks_writes and (s["scans"] or s["rewrites"]) and not s["exempt_from_statement_timeout"]), s


def expanded(case: Case, db) -> None:
    write(db, case.old_writes + case.new_writes)
    if case.after_expand:
        case.after_expand(db)


def write(db, statements) -> None:
    """Each statement must succeed; what it wrote is rolled back, so the case can repeat it."""
    for statement in statements:
        with db.transaction(force_rollback=True):
            db.execute(statement)
