"""Measure, on real PostgreSQL servers, the locks each statement of corpus.yaml takes, the
relations it rewrites and the tables it scans, and store that truth in truth.json beside this file.

Every case starts from the corpus's shared setup (a template database) plus its own setup, and
runs in a new session A, observed by a session B:

- B records every relation outside the system schemas (qualified name, relkind, relfilenode)
  before the statement.
- Transactional statements: A runs BEGIN; <statement>; SET CONSTRAINTS ALL IMMEDIATE (the
  deferred checks a commit would run); while A's transaction is still open, B
  reads A's relation locks from pg_locks (so the query that reads them adds none); A reads the
  relfilenodes and its own sequential-scan counts (pg_stat_xact_all_tables) again; ROLLBACK.
  Cases without a setup of their own share one database, which the rollback leaves as it was
  (bar sequence positions, which change no lock); a case with a setup gets a fresh clone of the
  template, where A runs and commits that setup first.
- Statements that refuse a transaction block (SQLSTATE 25001: the CONCURRENTLY forms, VACUUM,
  REINDEX of a partitioned table, ...) run in autocommit while other sessions get in their way:
  each table is locked by a blocker session of its own, and a snapshot session holds a
  REPEATABLE READ snapshot and ACCESS SHARE on every table and view (what CONCURRENTLY waits
  out). Each time A waits, B records A's relation locks, held and awaited; the sessions A waits
  for (pg_blocking_pids) end, and each table's blocker queues again for that table, so that
  every later phase of the statement waits and is seen too. Two passes, in fresh clones:
  blockers in EXCLUSIVE mode with the snapshot session, then in ACCESS EXCLUSIVE mode (which
  also catches ACCESS SHARE lookups); what they saw is merged. B reads the relfilenodes and the
  flushed scan counts (pg_stat_all_tables) once A has finished.

Locks, rewrites and scans are reported only for relations that existed before the statement.
A rewrite is a relation whose relfilenode changed; one that disappeared is matched by name to
its replacement (an index rebuilt by ALTER COLUMN TYPE or REINDEX CONCURRENTLY). A scan is a
table whose seq_scan counter grew: a rewrite, a validation, an index build (including the
rebuild of the indexes of a table just truncated or rewritten), or a query's plan (on these
small tables the planner prefers sequential scans, so for DML and foreign-key checks a scan
says little). Not seen: a lock taken and released within
a transactional statement; outside a transaction, a lock taken without waiting and released
before A next waits (blockers hold tables, not indexes or materialized views, which LOCK TABLE
cannot lock). Sessions run with TimeZone UTC (unless the case's setup sets it) and without
parallel workers, so that every lock belongs to session A.

Rerun when PostgreSQL changes (a new server version) or when the corpus changes, from the
repository's root (about a minute per version on two cores):

    .venv/bin/python -m tests.analysis.measure                  # both versions (18 and 15)
    .venv/bin/python -m tests.analysis.measure --version 15     # one version; keeps the other
    .venv/bin/python -m tests.analysis.measure --case 'index_*' # some cases; keeps the rest
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml
from psycopg import sql

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.yaml"
TRUTH = HERE / "truth.json"
VERSIONS = ("18", "15")
TEMPLATE = "corpus_template"
SHARED = "corpus_shared"
SESSION_OPTIONS = "-c TimeZone=UTC -c max_parallel_workers_per_gather=0 -c max_parallel_maintenance_workers=0"
NOT_IN_TRANSACTION = "25001"  # active_sql_transaction: "... cannot run inside a transaction block"
PASSES = (("EXCLUSIVE", True), ("ACCESS EXCLUSIVE", False))  # blockers' lock mode, snapshot session
STEP_DEADLINE = 30.0  # seconds for a blocked statement to get through all its waits

RELATIONS = """
    SELECT c.oid, n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname),
           c.relkind, c.relfilenode
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
"""
PENDING_SCANS = "SELECT relid, seq_scan FROM pg_catalog.pg_stat_xact_all_tables"  # this backend's, not yet flushed
FLUSHED_SCANS = "SELECT relid, coalesce(seq_scan, 0) FROM pg_catalog.pg_stat_all_tables"
LOCKS = """
    SELECT relation, mode FROM pg_catalog.pg_locks
    WHERE pid = %s AND locktype = 'relation'
      AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
"""


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    qualified: str  # schema.name, each part quoted as PostgreSQL quotes identifiers
    kind: str  # pg_class.relkind
    filenode: int


@dataclass
class Finding:
    """What running a statement showed, by relation name."""

    locks: dict[str, set[str]] = field(default_factory=dict)  # relation -> lock modes held or awaited
    kinds: dict[str, str] = field(default_factory=dict)  # relation -> relkind
    rewrites: set[str] = field(default_factory=set)
    scans: set[str] = field(default_factory=set)  # relations read by a sequential scan
    error: str | None = None  # "SQLSTATE: message"

    def merge(self, other: Finding) -> None:
        for name, modes in other.locks.items():
            self.locks.setdefault(name, set()).update(modes)
        self.kinds.update(other.kinds)
        self.rewrites |= other.rewrites
        self.scans |= other.scans
        self.error = self.error or other.error


# ---- corpus and servers ----

def truth_file(corpus: Path) -> Path:
    """Where a corpus's measured truth is kept: truth.json for corpus.yaml, NAME.truth.json for NAME.yaml."""
    return TRUTH if corpus.resolve() == CORPUS else corpus.with_suffix(".truth.json")


def load_corpus(path: Path = CORPUS) -> tuple[str, list[dict]]:
    corpus = yaml.safe_load(path.read_text())
    return corpus["setup"], corpus["cases"]


@contextlib.contextmanager
def server(version: str):
    """Start a throwaway server of that major version; yield a function from database name to URL."""
    if version == "18":
        from orchestrator import embedded

        with tempfile.TemporaryDirectory(prefix="rollout-measure-") as folder:
            info = embedded.start(folder)
            try:
                yield info.url
            finally:
                embedded.stop(folder)
    elif version == "15":
        from tests import pg15

        reason = pg15.unavailable()
        if reason:
            raise SystemExit(f"cannot measure on PostgreSQL 15: {reason}")
        cluster = pg15.Cluster()
        try:
            yield cluster.url
        finally:
            cluster.close()
    else:
        raise ValueError(f"no server for version {version!r}")


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS)


def tune(url) -> str:
    """Make the throwaway server fast and quiet (no fsync, no autovacuum); return its version."""
    with connect(url("postgres")) as admin:
        for setting in ("fsync", "synchronous_commit", "full_page_writes", "autovacuum"):
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = off").format(sql.Identifier(setting)))
        admin.execute("SELECT pg_reload_conf()")
        return admin.execute("SHOW server_version").fetchone()[0].split()[0]


def create_template(url, setup: str) -> None:
    """The database every case's database is cloned from; closed to connections so that nothing
    keeps it busy while it is being copied."""
    with connect(url("postgres")) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with connect(url(TEMPLATE)) as session:
        session.execute(setup)
    with connect(url("postgres")) as admin:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(TEMPLATE)))


@contextlib.contextmanager
def fresh_database(url, name: str):
    """A new database cloned from the template, dropped on exit; yields its URL."""
    with connect(url("postgres")) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE)))
    try:
        yield url(name)
    finally:
        with connect(url("postgres")) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def session_a(url: str) -> psycopg.Connection:
    """The session that runs the statement: a new one each time, so that no cache warmed by an
    earlier case changes what it locks."""
    session = connect(url)
    session.execute("SET statement_timeout = '60s'")
    return session


@contextlib.contextmanager
def sessions(url, name: str, setup: str | None = None):
    """A fresh database where session A has committed the setup; yields (its URL, A, B)."""
    with fresh_database(url, name) as db_url, session_a(db_url) as a, connect(db_url) as b:
        if setup:
            a.execute(setup)
        yield db_url, a, b


# ---- reading the catalog ----

def relations(session: psycopg.Connection) -> dict[int, Relation]:
    """Every relation outside the system schemas, by oid, as this session sees the catalog."""
    return {oid: Relation(schema, name, qualified, kind, filenode)
            for oid, schema, name, qualified, kind, filenode in session.execute(RELATIONS)}


def relation_locks(observer: psycopg.Connection, pid: int) -> dict[int, set[str]]:
    """The relation locks backend pid holds or awaits in the observer's database: oid -> modes."""
    locks: dict[int, set[str]] = {}
    for oid, mode in observer.execute(LOCKS, (pid,)):
        locks.setdefault(oid, set()).add(mode)
    return locks


def rewritten(before: dict[int, Relation], after: dict[int, Relation]) -> list[Relation]:
    """Relations whose relfilenode changed; one that disappeared is matched to the relation now
    bearing its name and kind (an index rebuilt under the same name)."""
    by_name = {(r.qualified, r.kind): r for r in after.values()}
    changed = []
    for oid, old in before.items():
        new = after.get(oid) or by_name.get((old.qualified, old.kind))
        if new is not None and old.filenode and new.filenode != old.filenode:
            changed.append(old)
    return changed


def seq_scans(session: psycopg.Connection, query: str) -> dict[int, int]:
    """Sequential scans counted per table (oid -> count) by one of the statistics views."""
    return dict(session.execute(query).fetchall())


def scanned(counts_before: dict[int, int], counts_after: dict[int, int]) -> set[int]:
    return {oid for oid, count in counts_after.items() if count > counts_before.get(oid, 0)}


def finding(before: dict[int, Relation], locks: dict[int, set[str]], after: dict[int, Relation] | None,
            scans: set[int] = frozenset(), error: str | None = None) -> Finding:
    """Name the locks, rewrites and scans of relations that existed before the statement."""
    locked = [r for oid, r in before.items() if oid in locks]
    rewrites = rewritten(before, after) if after else []
    read = [r for oid, r in before.items() if oid in scans]
    return Finding(locks={r.qualified: set(locks[oid]) for oid, r in before.items() if oid in locks},
                   kinds={r.qualified: r.kind for r in [*locked, *rewrites, *read]},
                   rewrites={r.qualified for r in rewrites}, scans={r.qualified for r in read}, error=error)


def error_text(exc: psycopg.Error) -> str:
    return f"{exc.sqlstate}: {exc.diag.message_primary or exc}"


# ---- a statement inside a transaction ----

def in_transaction(a: psycopg.Connection, b: psycopg.Connection, statement: str) -> Finding:
    """BEGIN; statement; B reads A's locks; A reads the catalog and its scan counts; ROLLBACK.
    Raises the statement's error when it cannot run in a transaction block."""
    before = relations(b)
    a.execute("BEGIN")
    try:
        counts = seq_scans(a, PENDING_SCANS)
        try:
            a.execute(statement)
        except psycopg.Error as exc:
            if exc.sqlstate == NOT_IN_TRANSACTION:
                raise
            return finding(before, relation_locks(b, a.info.backend_pid), None, error=error_text(exc))
        try:  # what the commit would do: deferred constraint checks run now
            with a.transaction():
                a.execute("SET CONSTRAINTS ALL IMMEDIATE")
        except psycopg.Error:
            pass  # the commit would fail: the locks its checks took still count
        locks = relation_locks(b, a.info.backend_pid)
        return finding(before, locks, relations(a), scanned(counts, seq_scans(a, PENDING_SCANS)))
    finally:
        a.execute("ROLLBACK")


# ---- a statement outside a transaction, stepped through its waits ----

def hold_table(url: str, table: Relation, mode: str, wait: bool = True) -> psycopg.Connection:
    """A session whose open transaction locks one table (ONLY: not its partitions or children).
    Without wait the request is only sent, to queue behind whoever holds the table."""
    session = connect(url)
    query = sql.SQL("BEGIN; LOCK TABLE ONLY {} IN {} MODE").format(
        sql.Identifier(table.schema, table.name), sql.SQL(mode))
    if wait:
        session.execute(query)
    else:
        session.pgconn.send_query(query.as_bytes(session))
    return session


def hold_snapshot(url: str, tables: list[Relation]) -> psycopg.Connection:
    """A session with a REPEATABLE READ snapshot and ACCESS SHARE on the tables and views."""
    session = connect(url)
    session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    names = sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in tables)
    session.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(names))
    session.execute("SELECT 1")  # takes the transaction's snapshot
    return session


def let_go(observer: psycopg.Connection, *ending: psycopg.Connection) -> None:
    """End the sessions' backends (releasing their locks), whether idle or still queued for a
    lock. Without waiting: a blocker queueing again for the same table queues behind A."""
    observer.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid",
                     ([s.info.backend_pid for s in ending],))
    for session in ending:
        session.close()


def start(a: psycopg.Connection, statement: str) -> tuple[threading.Thread, list[psycopg.Error]]:
    """Run the statement in session A (autocommit) in a thread; the list receives its error."""
    errors: list[psycopg.Error] = []

    def run() -> None:
        try:
            a.execute(statement)
        except psycopg.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def hold_everything(url: str, before: dict[int, Relation], mode: str,
                    snapshot: bool) -> dict[int, tuple[Relation | None, psycopg.Connection]]:
    """Blocker sessions, by backend pid: one per table, holding it in that mode, and with snapshot
    a snapshot session (no table of its own) first."""
    holders: dict[int, tuple[Relation | None, psycopg.Connection]] = {}
    if snapshot:
        session = hold_snapshot(url, [r for r in before.values() if r.kind in "rpv"])
        holders[session.info.backend_pid] = (None, session)
    for table in sorted((r for r in before.values() if r.kind in "rp"), key=lambda r: r.qualified):
        session = hold_table(url, table, mode)
        holders[session.info.backend_pid] = (table, session)
    return holders


def follow(url: str, b: psycopg.Connection, pid: int, thread: threading.Thread, mode: str,
           holders: dict[int, tuple[Relation | None, psycopg.Connection]]) -> dict[int, set[str]]:
    """Until the statement's thread ends: each time backend pid waits, record its relation locks,
    end the holders it waits for and queue each one's table again. Returns the locks seen."""
    locks: dict[int, set[str]] = {}
    deadline = time.monotonic() + STEP_DEADLINE
    while thread.is_alive() and time.monotonic() < deadline:
        waits_for = b.execute("SELECT pg_blocking_pids(%s)", (pid,)).fetchone()[0]
        if not waits_for:
            time.sleep(0.005)
            continue
        for oid, modes in relation_locks(b, pid).items():
            locks.setdefault(oid, set()).update(modes)
        for blocker in waits_for:
            table, session = holders.pop(blocker, (None, None))
            if session is not None:
                let_go(b, session)
            if table is not None:
                session = hold_table(url, table, mode, wait=False)
                holders[session.info.backend_pid] = (table, session)
    return locks


def stepped(url: str, a: psycopg.Connection, b: psycopg.Connection, statement: str, mode: str,
            snapshot: bool) -> Finding | None:
    """Run the statement in autocommit while blockers hold every table, following it through its
    waits. None when it never waited, so that nothing of it could be seen."""
    before = relations(b)
    holders = hold_everything(url, before, mode, snapshot)
    a.execute("SELECT pg_stat_force_next_flush()")  # A's scan counts so far reach the shared statistics
    counts = seq_scans(b, FLUSHED_SCANS)
    thread, errors = start(a, statement)
    try:
        locks = follow(url, b, a.info.backend_pid, thread, mode, holders)
    finally:
        let_go(b, *(session for _, session in holders.values()))
    thread.join(STEP_DEADLINE)
    if thread.is_alive():
        a.cancel()
        thread.join(STEP_DEADLINE)
        return finding(before, locks, None, error=f"timeout: still running after {STEP_DEADLINE:.0f}s of stepping")
    if not locks and not errors:
        return None
    a.execute("SELECT pg_stat_force_next_flush()")
    return finding(before, locks, relations(b), scanned(counts, seq_scans(b, FLUSHED_SCANS)),
                   error_text(errors[0]) if errors else None)


# ---- one case ----

def report(seen: Finding, transactional: bool) -> dict:
    """The truth.json entry of one case."""
    return {
        "transactional": transactional,
        "locks": {name: sorted(modes) for name, modes in seen.locks.items()},
        "relkinds": seen.kinds,
        "rewrites": sorted(seen.rewrites),
        "scans": sorted(seen.scans),
        "error": seen.error,
    }


def measure_case(url, shared_url: str, b: psycopg.Connection, number: int, case: dict) -> dict:
    """Try the statement in a transaction (in the shared database, with B as observer, when the
    case has no setup of its own); step it through its waits when it refuses one."""
    name = f"case_{number}"
    try:
        if case.get("setup"):
            with sessions(url, name, case["setup"]) as (_, a, own_b):
                return report(in_transaction(a, own_b, case["sql"]), True)
        with session_a(shared_url) as a:
            return report(in_transaction(a, b, case["sql"]), True)
    except psycopg.Error as exc:
        if exc.sqlstate != NOT_IN_TRANSACTION:
            return report(Finding(error=f"setup: {error_text(exc)}"), True)
    seen = []
    for mode, snapshot in PASSES:
        with sessions(url, name, case.get("setup")) as (db_url, a, observer):
            seen.append(stepped(db_url, a, observer, case["sql"], mode, snapshot))
    merged = Finding()
    for found in filter(None, seen):
        merged.merge(found)
    if not any(seen):
        merged.error = "never waited for another session: its locks could not be seen"
    return report(merged, False)


# ---- one version, and the file ----

def applies(case: dict, version: str) -> bool:
    return int(version) >= int(case.get("min_version", 0))


def measure_version(version: str, setup: str, cases: list[dict]) -> dict:
    started = time.monotonic()
    with server(version) as url:
        server_version = tune(url)
        create_template(url, setup)
        with fresh_database(url, SHARED) as shared_url, connect(shared_url) as b:
            results = {case["id"]: measure_case(url, shared_url, b, number, case)
                       for number, case in enumerate(cases) if applies(case, version)}
    errors = sum(1 for r in results.values() if r["error"])
    print(f"PostgreSQL {server_version}: {len(results)} cases measured, {errors} with an error, "
          f"{time.monotonic() - started:.0f}s")
    return {"server_version": server_version, "cases": results}


def dumps(truth: dict) -> str:
    """JSON with sorted keys and indent 1; each list, and each object that holds no object or
    list of objects (a case's locks, relkinds), on one line."""
    text = json.dumps(truth, indent=1, sort_keys=True, ensure_ascii=False)

    def one_line(match: re.Match) -> str:  # JSON strings hold no raw newline: only layout is joined
        return re.sub(r"\n\s*", "", re.sub(r",\n\s*", ", ", match.group()))

    text = re.sub(r"\[[^\[\]{}]*\]", one_line, text)
    return re.sub(r"\{[^{}]*\}", one_line, text) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", choices=[*VERSIONS, "all"], default="all")
    parser.add_argument("--case", action="append", metavar="ID",
                        help="measure only the cases whose id matches this pattern (repeatable); keep the others")
    parser.add_argument("--corpus", type=Path, default=CORPUS,
                        help="the corpus to measure (default corpus.yaml); its truth goes beside it")
    args = parser.parse_args(argv)
    setup, cases = load_corpus(args.corpus)
    truth_path = truth_file(args.corpus)
    if args.case:
        cases = [c for c in cases if any(fnmatch.fnmatchcase(c["id"], p) for p in args.case)]
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    truth["measured_with"] = "python -m tests.analysis.measure"
    versions = truth.setdefault("versions", {})
    for version in VERSIONS if args.version == "all" else (args.version,):
        measured = measure_version(version, setup, cases)
        if args.case and version in versions:
            versions[version]["server_version"] = measured["server_version"]
            versions[version]["cases"].update(measured["cases"])
        else:
            versions[version] = measured
    truth_path.write_text(dumps(truth))


if __name__ == "__main__":
    main()
