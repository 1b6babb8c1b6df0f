"""The analysis against PostgreSQL's truth: for each statement of corpus.yaml, the locks and
rewrites `analyze` + `catalog.resolve` claim (what `rollout plan` shows) are compared with what
measure.py saw on a real server of the same major version (truth.json).

The bar: agreement on at least 99% of statements, and never a lock weaker than the truth.

What is compared, per statement:
- every relation that existed before it (tables, partitioned tables, views, materialized
  views, foreign tables, sequences; indexes only where the statement names them, since every
  query takes ACCESS SHARE on the indexes its plan might use) gets the same lock mode, judged by
  what the modes block (PostgreSQL can hold several modes on one relation: they are combined);
- whether it rewrites a table or materialized view (a new relfilenode; emptying one, as TRUNCATE
  does, is not a rewrite but data loss, which the analysis reports as such);
- whether it may run in a transaction block.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from orchestrator.analysis import Lock, analyze
from orchestrator.analysis.catalog import resolve

from .measure import load_corpus

HERE = Path(__file__).resolve().parent
TABLE_KINDS = {"r", "p", "v", "m", "f", "S"}


@pytest.fixture(scope="module")
def corpus_db(server):
    """A database holding the corpus's shared setup, and the server's major version."""
    setup, cases = load_corpus()
    name = f"corpus_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(server.url(name), autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(setup)
        version = str(conn.info.server_version // 10000)
        yield conn, version, cases
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def named(statement: str, relation: str) -> bool:
    bare = relation.split(".")[-1].strip('"').lower()
    return re.search(rf"(?<![\w$]){re.escape(bare)}(?![\w$])", statement.lower()) is not None


def compare(conn, case: dict, truth: dict) -> list[str]:
    """What the analysis gets wrong about one statement ([] when it agrees), each problem
    prefixed 'weaker' when the claimed lock blocks less than PostgreSQL's."""
    with conn.transaction(force_rollback=True):
        if case.get("setup"):
            conn.execute(case["setup"])
        effects = [resolve(conn, e) for e in analyze(case["sql"])]
        existing = {r.relation for e in effects for r in e.locks
                    if conn.execute("SELECT to_regclass(%s)", (r.relation,)).fetchone()[0] is not None}
    problems = []
    kinds = truth["relkinds"]
    compared = {rel for rel in truth["locks"]
                if kinds.get(rel) in TABLE_KINDS or (kinds.get(rel) in ("i", "I") and named(case["sql"], rel))}
    compared |= {rel for rel in existing if kinds.get(rel, "r") in TABLE_KINDS}
    for rel in sorted(compared):
        true_modes = [Lock.parse(m) for m in truth["locks"].get(rel, [])]
        expected = Lock.combine(true_modes)
        claimed = Lock.combine([r.lock for e in effects for r in e.locks if r.relation == rel])
        if expected == claimed or (expected and claimed and expected.conflicts == claimed.conflicts):
            continue
        if expected is not None and (claimed is None or not claimed.covers(expected)):
            problems.append(f"weaker: {rel}: claims {claimed.label if claimed else 'no lock'}, "
                            f"PostgreSQL takes {expected.label}")
        else:
            problems.append(f"stronger: {rel}: claims {claimed.label}, PostgreSQL takes "
                            f"{expected.label if expected else 'no lock'}")
    rewritten = [rel for rel in truth["rewrites"] if kinds.get(rel) in ("r", "m")]
    truly = bool(rewritten) and not any(e.loses_data for e in effects)
    claimed_rewrite = any(e.rewrites for e in effects)
    if truly != claimed_rewrite:
        problems.append(f"rewrites: PostgreSQL rewrites {rewritten or 'nothing'}, the analysis says {claimed_rewrite}")
    if truth["transactional"] != all(e.transactional for e in effects):
        problems.append(f"transactional: PostgreSQL says {truth['transactional']}")
    return problems


def test_the_analysis_agrees_with_postgresql_on_every_lock(corpus_db):
    conn, version, cases = corpus_db
    truth = json.loads((HERE / "truth.json").read_text())["versions"].get(version)
    if truth is None:
        pytest.skip(f"tests/analysis/truth.json has no measurements for PostgreSQL {version}: run "
                    f"`python -m tests.analysis.measure --version {version}`")
    measured = [c for c in cases if c["id"] in truth["cases"] and not truth["cases"][c["id"]]["error"]]
    wrong = {c["id"]: p for c in measured if (p := compare(conn, c, truth["cases"][c["id"]]))}
    weaker = {case: p for case, p in wrong.items() if any(x.startswith("weaker") for x in p)}
    report = "\n".join(f"  {case}: {'; '.join(p)}" for case, p in sorted(wrong.items()))
    agreement = 1 - len(wrong) / len(measured)
    print(f"PostgreSQL {version}: {len(measured) - len(wrong)} of {len(measured)} statements agree "
          f"({agreement:.1%}); {len(weaker)} weaker; the others:\n{report}")
    assert len(measured) >= 300
    assert not weaker, f"{len(weaker)} statements claimed a weaker lock than PostgreSQL takes:\n{report}"
    assert agreement >= 0.99, f"agreement {agreement:.1%} on {len(measured)} statements; wrong:\n{report}"
