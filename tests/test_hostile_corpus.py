"""A corpus of hostile input (issue 12): each case is something an attacker or a careless
operator can hand rollout, with the outcome it must have (exit code, a message naming the file,
line or object), and the checks every case gets whatever its input: no traceback, no secret in
the output, no escape sequence reaching the terminal, and the database unchanged where the
command must not write.

Five classes, one table each:
- FILES: every kind of file a plan names (plan, migration, rollback, check, bootstrap, seed),
  linked out of the folder, a FIFO, a folder, huge, not UTF-8, with a byte-order mark or a NUL,
  empty or comments only. Needs no database.
- YAML: aliases, nesting, YAML 1.1 booleans as names, duplicate keys, tabs, wrong types for each
  kind of key, numbers and durations out of range, ids with odd characters. Needs no database.
- CLI: every command with bad STEP names, unknown options, Unicode digits, huge numbers, empty
  strings, and DSNs that are empty, unparseable, hold a '%' or point nowhere. One shared
  database, which none of them may change.
- TERMINAL: escape sequences and rich markup in actors, reasons, titles, file names, flag
  values and rows quoted by PostgreSQL, through every command that prints them.
- HAND_EDITS: rollout's own state edited as a superuser would (triggers off): each case gets a
  copy (CREATE DATABASE ... TEMPLATE) of an applied database.
"""

from __future__ import annotations

import os
import shutil
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import make_conninfo

from orchestrator.cli import cli

SECRET = "Zq9-corpus-s3cret"  # the password of every DSN here, and $PGPASSWORD: it must never be shown
HOSTILE = "x\x1b]0;pwned\x07 [/] [bold red]\x1b[2J\u202e\x9b31m"  # retitle, markup, clear, bidi, C1 CSI
RAW = ("\x1b", "\x07", "\x9b", "\u202e")  # what must never reach the terminal as itself
SHOWN = "x\\x1b]0;pwned"  # HOSTILE as the terminal must show it
NOWHERE = f"postgresql://corpus:{SECRET}@127.0.0.1:1/nowhere?connect_timeout=2"

PLAN = """\
version: 1
environments:
  local: {database: embedded, bootstrap: db/boot.sql, seed: db/seed.sql}
  production: {dsn_env: ROLLOUT_CORPUS_NEVER_SET, confirm: true}
flags:
  f: {description: the application writes t}
timeouts: {lock: 200ms, statement: 30s}
steps:
  - id: a
    title: A table
    priority: high
    migrate: steps/a
    preconditions:
      - {name: pre, file: checks/pre.sql}
    verify:
      - {name: post, file: checks/post.sql}
  - id: b
    title: B table
    priority: medium
    depends_on: [a]
    flag: f
    rollout:
      stages: [10, 50, 100]
      hold: 0s
      checks:
        - {name: gate, file: checks/gate.sql}
    migrate: steps/b
    finalize: steps/bfin
    backfills:
      - {name: fill, table: t, set: {v: "1"}, where: v = 0, batch_size: 5000}
"""
FILES = {
    "db/boot.sql": "CREATE TABLE base (id bigint PRIMARY KEY);\n",
    "db/seed.sql": "INSERT INTO base SELECT g FROM generate_series(1, current_setting('rollout.seed_rows')::int) AS g;\n",
    "checks/pre.sql": "SELECT 1 WHERE false\n",
    "checks/post.sql": "SELECT id FROM ta WHERE false\n",
    "checks/gate.sql": "SELECT id FROM t WHERE v = 0\n",
    "steps/a/0001_a.sql": "CREATE TABLE ta (id bigint PRIMARY KEY, s text);\n",
    "steps/a/0001_a.rollback.sql": "DROP TABLE ta;\n",
    "steps/b/0002_b.sql": "CREATE TABLE t (id bigint PRIMARY KEY, v int);\n"
                          "INSERT INTO t SELECT g, 0 FROM generate_series(1, 20) AS g;\n",
    "steps/b/0002_b.rollback.sql": "DROP TABLE t;\n",
    "steps/bfin/0003_bfin.sql": "CREATE TABLE contracted (id bigint);\n",
    "steps/bfin/0003_bfin.rollback.sql": "DROP TABLE contracted;\n",
}


# ---------------------------------------------------------------------------------------------
# running a case, and what every case is checked for

def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env={"ROLLOUT_ACTOR": "tester", "PGPASSWORD": SECRET, **(env or {})})


def assert_safe(result, code: int, message: str | None, what: str) -> None:
    """The outcome the case expects, and what no case may ever do."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"{what}: a traceback (a bug in rollout, whatever the input):\n{trace}")
    out = result.output
    assert "Traceback" not in out, f"{what}: {out}"
    assert SECRET not in out, f"{what}: the secret was shown:\n{out}"
    shown = [c for c in RAW if c in out]
    assert not shown, f"{what}: {shown!r} reached the terminal as itself:\n{out!r}"
    assert result.exit_code == code, f"{what}: exit {result.exit_code}, expected {code}:\n{out}"
    if message is not None:
        assert message in out, f"{what}: expected {message!r} in:\n{out}"


def fingerprint(dsn: str, logs: bool = True) -> str:
    """Everything a write would change: the catalog (relations, functions, types, schemas) and every
    row of every table. Without `logs`, rollout's run log and event log (which a refused command
    that took the lock may append to) are left out."""
    skip = () if logs else ("rollout.runs", "rollout.events")
    with psycopg.connect(dsn, autocommit=True) as conn:
        parts = conn.execute(
            "SELECT string_agg(x, ',' ORDER BY x) FROM ("
            " SELECT 'r:' || n.nspname || '.' || c.relname || ':' || c.relkind::text AS x FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', "
            " 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg\\_temp%'"
            " UNION ALL SELECT 'f:' || p.oid::regprocedure::text FROM pg_proc AS p JOIN pg_namespace AS n"
            " ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " UNION ALL SELECT 't:' || t.tgname || ':' || t.tgenabled::text FROM pg_trigger AS t WHERE NOT t.tgisinternal"
            ") AS catalog").fetchone()[0] or ""
        tables = conn.execute(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class AS c JOIN pg_namespace AS n "
            "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema', 'pg_toast') ORDER BY 1").fetchall()
        for (table,) in tables:
            if table.replace('"', "") in skip:
                continue
            rows = conn.execute(sql.SQL("SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
                                        "FROM {} AS t").format(sql.SQL(table))).fetchone()
            parts += f";{table}={rows[0]}:{rows[1]}"
    return parts


def write_files(folder: Path, plan: str, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (folder / "rollout.yaml").write_text(plan)
    return folder / "rollout.yaml"


def with_password(dsn: str) -> str:
    """The test server trusts local connections: a password in the DSN is not needed, only carried,
    which is what lets every case check it never shows."""
    return make_conninfo(dsn, password=SECRET)


def create_database(server, template: str | None = None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}{}").format(
            sql.Identifier(name), sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL("")))
    return name


def drop_database(server, name: str) -> None:
    with psycopg.connect(server.url("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------
# FILES and YAML: a valid plan folder, changed by each case; `check` and `apply` must refuse it
# the same way, before any database is reached (apply points at a DSN where nothing listens)

class _Kind:
    def __init__(self, name: str, target: str = ""):
        self.name, self.target = name, target

    def __repr__(self) -> str:
        return f"{self.name}({self.target})"


def Link(target: str) -> _Kind:
    """A symbolic link; '{out}' is a folder beside the plan's holding secret.sql (with the secret)
    and steps/ (a valid migration folder)."""
    return _Kind("link", target)


FIFO, FOLDER, DELETE = _Kind("fifo"), _Kind("folder"), _Kind("delete")
BIG = "SELECT 1;\n" * 110_000  # 1.1 MB
BOM = b"\xef\xbb\xbf"


@dataclass
class PlanCase:
    id: str
    message: str
    files: dict = field(default_factory=dict)  # path -> str | bytes | _Kind
    plan: Callable[[str], str] | str | bytes | None = None  # a change of PLAN, or the whole text
    plan_path: Callable[[Path], str] | None = None  # what --plan names instead of the folder's rollout.yaml
    marks: tuple = ()


def sub(*pairs: str) -> Callable[[str], str]:
    """PLAN with each `old` replaced by `new` (each must be there: a typo fails loudly)."""
    def change(text: str) -> str:
        for old, new in zip(pairs[::2], pairs[1::2]):
            assert old in text, old
            text = text.replace(old, new, 1)
        return text
    return change


def timeouts(value: str) -> Callable[[str], str]:
    return sub("timeouts: {lock: 200ms, statement: 30s}", f"timeouts: {value}")


def step_a(extra: str) -> Callable[[str], str]:
    """Lines added to step a (indented as its keys)."""
    return sub("    migrate: steps/a\n", "    migrate: steps/a\n" + extra)


def backfill(extra: str) -> Callable[[str], str]:
    return sub("batch_size: 5000}", f"batch_size: 5000, {extra}}}")


FILE_CASES = [
    # symbolic links out of the plan's folder, for every kind of file (the target holds the secret)
    PlanCase("link-migration-out", "'steps/a/0001_a.sql' is outside the plan's folder",
             {"steps/a/0001_a.sql": Link("{out}/secret.sql")}),
    PlanCase("link-migration-proc-environ", "'steps/a/0001_a.sql' is outside the plan's folder",
             {"steps/a/0001_a.sql": Link("/proc/self/environ")}),
    PlanCase("link-rollback-out", "'steps/a/0001_a.rollback.sql' is outside the plan's folder",
             {"steps/a/0001_a.rollback.sql": Link("{out}/secret.sql")}),
    PlanCase("link-finalize-migration-out", "'steps/bfin/0003_bfin.sql' is outside the plan's folder",
             {"steps/bfin/0003_bfin.sql": Link("{out}/secret.sql")}),
    PlanCase("link-precondition-out", "'checks/pre.sql' is outside the plan's folder",
             {"checks/pre.sql": Link("{out}/secret.sql")}),
    PlanCase("link-verify-out", "'checks/post.sql' is outside the plan's folder",
             {"checks/post.sql": Link("{out}/secret.sql")}),
    PlanCase("link-rollout-check-out", "'checks/gate.sql' is outside the plan's folder",
             {"checks/gate.sql": Link("{out}/secret.sql")}),
    PlanCase("link-bootstrap-out", "'db/boot.sql' is outside the plan's folder", {"db/boot.sql": Link("{out}/secret.sql")}),
    PlanCase("link-seed-out", "'db/seed.sql' is outside the plan's folder", {"db/seed.sql": Link("{out}/secret.sql")}),
    PlanCase("link-seed-dev-zero", "'db/seed.sql' is outside the plan's folder", {"db/seed.sql": Link("/dev/zero")}),
    PlanCase("link-migrate-folder-out", "'steps/a' is outside the plan's folder",
             {"steps/a/0001_a.sql": DELETE, "steps/a/0001_a.rollback.sql": DELETE, "steps/a": Link("{out}/steps")}),
    PlanCase("link-parent-folder-out", "'checks/pre.sql' is outside the plan's folder",
             {"checks/pre.sql": DELETE, "checks/post.sql": DELETE, "checks/gate.sql": DELETE, "checks": Link("{out}")}),
    PlanCase("path-dotdot-out", "'../outside/secret.sql' is outside the plan's folder",
             plan=sub("file: checks/pre.sql", "file: ../outside/secret.sql")),
    PlanCase("path-absolute-out", "is outside the plan's folder", plan=sub("bootstrap: db/boot.sql", "bootstrap: /etc/passwd")),
    PlanCase("link-dangling", "'steps/a/0001_a.sql' does not exist", {"steps/a/0001_a.sql": Link("nowhere.sql")}),
    PlanCase("link-loop", "'steps/a/0001_a.sql' does not exist",
             {"steps/a/0001_a.sql": Link("0001_loop.sql"), "steps/a/0001_loop.sql": Link("0001_a.sql")}),
    PlanCase("plan-link-to-a-secret-file", "the plan is a YAML str, not a mapping of keys",
             {"rollout.yaml": Link("{out}/secret.sql")}),
    PlanCase("plan-is-a-secret-file", "the plan is a YAML str, not a mapping of keys",
             plan_path=lambda folder: str(folder.parent / "outside" / "secret.sql")),
    PlanCase("plan-is-dev-zero", "cannot read the plan: not a regular file", plan_path=lambda folder: "/dev/zero"),
    # FIFOs: refused, never waited on
    PlanCase("fifo-migration", "cannot read 'steps/a/0001_a.sql': not a regular file", {"steps/a/0001_a.sql": FIFO}),
    PlanCase("fifo-rollback", "cannot read 'steps/a/0001_a.rollback.sql': not a regular file",
             {"steps/a/0001_a.rollback.sql": FIFO}),
    PlanCase("fifo-verify", "cannot read 'checks/post.sql': not a regular file", {"checks/post.sql": FIFO}),
    PlanCase("fifo-rollout-check", "cannot read 'checks/gate.sql': not a regular file", {"checks/gate.sql": FIFO}),
    PlanCase("fifo-bootstrap", "cannot read 'db/boot.sql': not a regular file", {"db/boot.sql": FIFO}),
    PlanCase("fifo-seed", "cannot read 'db/seed.sql': not a regular file", {"db/seed.sql": FIFO}),
    PlanCase("fifo-plan", "cannot read the plan: not a regular file", {"fifo.yaml": FIFO},
             plan_path=lambda folder: str(folder / "fifo.yaml")),
    # folders where files are expected, and a file where a folder is
    PlanCase("folder-as-migration", "'steps/a/0001_a.sql' should be a file", {"steps/a/0001_a.sql": FOLDER}),
    PlanCase("folder-as-rollback", "'steps/a/0001_a.rollback.sql' should be a file", {"steps/a/0001_a.rollback.sql": FOLDER}),
    PlanCase("folder-as-check", "'checks/pre.sql' should be a file", {"checks/pre.sql": FOLDER}),
    PlanCase("folder-as-bootstrap", "'db/boot.sql' should be a file", {"db/boot.sql": FOLDER}),
    PlanCase("folder-as-seed", "'db/seed.sql' should be a file", {"db/seed.sql": FOLDER}),
    PlanCase("folder-as-plan", "cannot read the plan: not a regular file", plan_path=lambda folder: str(folder)),
    PlanCase("file-as-migrate-folder", "'steps/a/0001_a.sql' should be a folder",
             plan=sub("migrate: steps/a", "migrate: steps/a/0001_a.sql")),
    # huge files: read up to 1 MiB, never whole
    PlanCase("huge-migration", "'steps/a/0001_a.sql' is larger than 1 MiB", {"steps/a/0001_a.sql": BIG}),
    PlanCase("huge-rollback", "'steps/a/0001_a.rollback.sql' is larger than 1 MiB", {"steps/a/0001_a.rollback.sql": BIG}),
    PlanCase("huge-check", "'checks/gate.sql' is larger than 1 MiB", {"checks/gate.sql": "-- x\n" * 250_000}),
    PlanCase("huge-bootstrap", "'db/boot.sql' is larger than 1 MiB", {"db/boot.sql": BIG}),
    PlanCase("huge-seed", "'db/seed.sql' is larger than 1 MiB", {"db/seed.sql": BIG}),
    PlanCase("huge-plan-one-line", "the plan is larger than 1024 KiB", plan=lambda text: text + "# " + "x" * 1_100_000 + "\n"),
    # not UTF-8: named, with the byte
    PlanCase("latin1-migration", "'steps/a/0001_a.sql' is not UTF-8 text (byte 16)",
             {"steps/a/0001_a.sql": b"SELECT 1; -- caf\xe9 \xe0 la carte\n"}),
    PlanCase("latin1-rollback", "'steps/a/0001_a.rollback.sql' is not UTF-8 text (byte 11)",
             {"steps/a/0001_a.rollback.sql": b"DROP TABLE \xe9;\n"}),
    PlanCase("utf16-check", "'checks/post.sql' is not UTF-8 text (byte 0)",
             {"checks/post.sql": "SELECT 1 WHERE false".encode("utf-16")}),
    PlanCase("surrogate-bootstrap", "'db/boot.sql' is not UTF-8 text (byte 8)", {"db/boot.sql": b"SELECT '\xed\xa0\x80';\n"}),
    PlanCase("binary-seed", "'db/seed.sql' is not UTF-8 text (byte 0)", {"db/seed.sql": b"\xff\xfe\x00\x01garbage"}),
    PlanCase("utf16-plan", "not UTF-8 text (byte 0); save the plan as UTF-8", plan=lambda text: text.encode("utf-16")),
    # byte-order marks: refused everywhere alike
    PlanCase("bom-rollback", "'steps/a/0001_a.rollback.sql' starts with a UTF-8 byte-order mark",
             {"steps/a/0001_a.rollback.sql": BOM + b"DROP TABLE ta;\n"}),
    PlanCase("bom-check", "'checks/pre.sql' starts with a UTF-8 byte-order mark", {"checks/pre.sql": BOM + b"SELECT 1\n"}),
    PlanCase("bom-bootstrap", "'db/boot.sql' starts with a UTF-8 byte-order mark", {"db/boot.sql": BOM + b"SELECT 1;\n"}),
    PlanCase("bom-seed", "'db/seed.sql' starts with a UTF-8 byte-order mark", {"db/seed.sql": BOM + b"SELECT 1;\n"}),
    PlanCase("bom-finalize-migration", "'steps/bfin/0003_bfin.sql' starts with a UTF-8 byte-order mark",
             {"steps/bfin/0003_bfin.sql": BOM + b"-- transactional: false\nSELECT 1;\n"}),
    # NUL bytes: libpq would end the SQL there, silently
    PlanCase("nul-migration", "'steps/a/0001_a.sql' holds a NUL byte (byte 25)",
             {"steps/a/0001_a.sql": b"CREATE TABLE ta (id int);\x00DROP TABLE precious;\n"}),
    PlanCase("nul-rollback", "'steps/a/0001_a.rollback.sql' holds a NUL byte", {"steps/a/0001_a.rollback.sql": b"\x00"}),
    PlanCase("nul-check", "'checks/post.sql' holds a NUL byte", {"checks/post.sql": b"SELECT 1 WHERE false\x00\n"}),
    PlanCase("nul-bootstrap", "'db/boot.sql' holds a NUL byte", {"db/boot.sql": b"SELECT 1;\x00\n"}),
    PlanCase("nul-seed", "'db/seed.sql' holds a NUL byte", {"db/seed.sql": b"SELECT 1;\n\x00"}),
    PlanCase("nul-plan", "unacceptable character #x0000", plan=lambda text: text.encode() + b"# \x00\n"),
    # empty, and comments only
    PlanCase("empty-migration-and-rollback", "steps/a/0001_a.sql holds no SQL statement, and neither does its rollback",
             {"steps/a/0001_a.sql": "", "steps/a/0001_a.rollback.sql": ""}),
    PlanCase("comment-only-migration-and-rollback",
             "steps/a/0001_a.sql holds no SQL statement, and neither does its rollback",
             {"steps/a/0001_a.sql": "-- transactional: true\n-- nothing yet\n/* later */\n",
              "steps/a/0001_a.rollback.sql": "-- nothing to undo\n"}),
    PlanCase("blank-check", "'checks/pre.sql' is empty", {"checks/pre.sql": "  \n\t\n"}),
    PlanCase("comment-only-check", "'checks/gate.sql' is empty (or comments only)", {"checks/gate.sql": "-- rows left\n"}),
    PlanCase("empty-bootstrap", "'db/boot.sql' holds no SQL statement", {"db/boot.sql": ""}),
    PlanCase("comment-only-bootstrap", "'db/boot.sql' holds no SQL statement", {"db/boot.sql": "-- the schema\n/* */\n"}),
    PlanCase("comment-only-seed", "'db/seed.sql' holds no SQL statement", {"db/seed.sql": "-- sample data, later\n"}),
    PlanCase("comment-only-plan", "the plan is empty", plan="# a plan\n# to come\n"),
    PlanCase("empty-migrate-folder", "'steps/a' holds no migrations",
             {"steps/a/0001_a.sql": DELETE, "steps/a/0001_a.rollback.sql": DELETE}),
    # names rollout prints back: escaped, never acted on
    PlanCase("escape-in-migration-name", "0001_\\x1b]0;x\\x07.sql has no rollback file",
             {"steps/a/0001_a.sql": DELETE, "steps/a/0001_a.rollback.sql": DELETE,
              "steps/a/0001_\x1b]0;x\x07.sql": "SELECT 1;\n"}),
    PlanCase("escape-in-directive", "'-- transactional: \\x1b[2j' must be true or false",
             {"steps/a/0001_a.sql": "-- transactional: \x1b[2J\nSELECT 1;\n"}),
    PlanCase("empty-plan-path", "--plan (or ROLLOUT_PLAN) is empty", plan_path=lambda folder: ""),
]

YAML_CASES = [
    # anchors, aliases, nesting
    PlanCase("alias-copies-a-step", "duplicate step id 'b' (also steps[1])",
             plan=lambda text: text.replace("  - id: b\n", "  - &b\n    id: b\n") + "  - *b\n"),
    PlanCase("alias-undefined", "found undefined alias 'nowhere'", plan=lambda text: text + "extra: *nowhere\n"),
    PlanCase("alias-bomb-of-mappings", "expands to more than 50000 values",
             plan="version: 1\na: &a {x: 1, y: 2, z: 3, w: 4, v: 5, u: 6, t: 7, s: 8}\n"
                  + "".join(f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdef", "bcdefg"))),
    PlanCase("nesting-flow-mappings", "the YAML nests too deeply to read",
             plan="version: 1\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n"),
    PlanCase("nesting-block-sequences", "x: unknown key 'x'",
             plan=lambda text: text + "x:\n" + "".join(" " * i + "-\n" for i in range(1, 300))),
    # YAML 1.1 booleans where names go
    PlanCase("yaml11-on-as-flag-name", "a key reads as the YAML boolean true",
             plan=sub("  f: {description", "  on: {description", "flag: f", "flag: on")),
    PlanCase("yaml11-no-as-environment", "environments.False: a key reads as the YAML boolean false",
             plan=sub("  production:", "  no: {database: embedded}\n  production:")),
    PlanCase("yaml11-yes-as-step-id", "steps[0].id: this value reads as the YAML boolean true", plan=sub("id: a", "id: yes")),
    PlanCase("yaml11-off-in-depends-on", "steps[1].depends_on[0]: this value reads as the YAML boolean false",
             plan=sub("depends_on: [a]", "depends_on: [off]")),
    PlanCase("yaml11-on-as-priority", "steps[0].priority: this value reads as the YAML boolean true",
             plan=sub("priority: high", "priority: on")),
    PlanCase("yaml11-yes-as-title", "steps[0].title: this value reads as the YAML boolean true",
             plan=sub("title: A table", "title: Yes")),
    PlanCase("yaml11-no-as-backfill-name", "backfills[0].name: this value reads as the YAML boolean false",
             plan=sub("name: fill", "name: NO")),
    # duplicate keys, tabs, documents, tags, keys of other types
    PlanCase("duplicate-key-in-step", "steps[0].title: duplicate key 'title' (first at line 10)",
             plan=sub("    title: A table\n", "    title: A table\n    title: Another\n")),
    PlanCase("duplicate-environment", "environments.local: duplicate key 'local'",
             plan=sub("  production:", "  local: {dsn_env: OTHER}\n  production:")),
    PlanCase("duplicate-key-in-flow-mapping", "duplicate key 'name'", plan=sub("{name: pre,", "{name: pre, name: pre2,")),
    PlanCase("duplicate-top-level-key", "duplicate key 'version'", plan=lambda text: text + "version: 1\n"),
    PlanCase("tab-indentation", "found character '\\t' that cannot start any token",
             plan=sub("    title: B table", "\ttitle: B table")),
    PlanCase("tab-after-dash", "YAML syntax error", plan=sub("  - id: b", "  -\tid: b\n\t")),
    PlanCase("second-document", "but found another document", plan=lambda text: text + "---\nversion: 1\n"),
    PlanCase("python-tag", "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'",
             plan=sub("title: A table", "title: !!python/object/apply:os.system ['echo pwned']")),
    PlanCase("custom-tag", "could not determine a constructor for the tag '!env'", plan=sub("title: A table", "title: !env HOME")),
    PlanCase("binary-as-title", "steps[0].title: input should be a valid string (got b'hello')",
             plan=sub("title: A table", "title: !!binary aGVsbG8=")),
    PlanCase("date-as-title", "steps[0].title: input should be a valid string (got datetime.date(2024, 1, 1))",
             plan=sub("title: A table", "title: 2024-01-01")),
    PlanCase("list-as-key", "a key must be a plain name, not a list or a mapping",
             plan=sub("    title: A table\n", "    title: A table\n    ? [a, b]\n    : 1\n")),
    PlanCase("mapping-as-key", "a key must be a plain name, not a list or a mapping",
             plan=sub("flags:\n", "flags:\n  ? {x: 1}\n  : {description: d}\n")),
    PlanCase("integer-as-key", "keys should be strings (got 1)", plan=sub("    title: A table\n", "    title: A table\n    1: x\n")),
    PlanCase("null-as-key", "keys should be strings (got None)", plan=sub("    title: A table\n", "    title: A table\n    ~: x\n")),
    PlanCase("list-as-document", "the plan is a YAML list, not a mapping of keys", plan="- a\n- b\n"),
    PlanCase("scalar-as-document", "the plan is a YAML str, not a mapping of keys", plan="hello\n"),
    PlanCase("unclosed-quote", "YAML syntax error", plan=sub("title: A table", "title: 'A table")),
    # wrong types, for each kind of key
    PlanCase("version-as-string", "version: input should be 1 (got '1')", plan=sub("version: 1", "version: '1'")),
    PlanCase("version-as-float", "version: the format version is the integer 1 (got 1.0)", plan=sub("version: 1", "version: 1.0")),
    PlanCase("version-as-boolean", "version: the format version is the integer 1 (got True)", plan=sub("version: 1", "version: true")),
    PlanCase("environments-as-string", "environments: input should be a valid dictionary (got 'local')",
             plan=lambda text: text.replace(text[text.index("environments:"):text.index("flags:")], "environments: local\n")),
    PlanCase("steps-as-string", "steps: input should be a valid tuple (got 'all')",
             plan=lambda text: text[:text.index("steps:")] + "steps: all\n"),
    PlanCase("flags-as-list", "flags: input should be a valid dictionary (got ['f'])",
             plan=sub("  f: {description: the application writes t}", "  - f")),
    PlanCase("timeouts-as-string", "timeouts: input should be a valid dictionary or instance of timeouts (got 'fast')",
             plan=timeouts("fast")),
    PlanCase("step-id-as-integer", "steps[0].id: input should be a valid string (got 12)", plan=sub("id: a", "id: 12")),
    PlanCase("step-id-as-null", "steps[0].id: input should be a valid string (got None)", plan=sub("id: a", "id: ~")),
    PlanCase("title-as-list", "steps[0].title: input should be a valid string (got ['x'])", plan=sub("title: A table", "title: [x]")),
    PlanCase("migrate-as-mapping", "steps[0].migrate: input should be a valid string (got {'path': 'x'})",
             plan=sub("migrate: steps/a", "migrate: {path: x}")),
    PlanCase("depends-on-as-string", "steps[1].depends_on: input should be a valid tuple (got 'a')",
             plan=sub("depends_on: [a]", "depends_on: a")),
    PlanCase("preconditions-as-string", "steps[0].preconditions: input should be a valid tuple",
             plan=sub("    preconditions:\n      - {name: pre, file: checks/pre.sql}\n", "    preconditions: SELECT 1\n")),
    PlanCase("confirm-as-string", "environments.production.confirm: input should be a valid boolean (got 'maybe')",
             plan=sub("confirm: true", "confirm: maybe")),
    PlanCase("flag-default-as-string", "flags.f.default: a flag value is on, off or a percentage from 0 to 100 (got '50')",
             plan=sub("{description: the application writes t}", "{description: d, default: '50'}")),
    PlanCase("flag-default-as-float", "(got 50.5)", plan=sub("{description: the application writes t}",
                                                              "{description: d, default: 50.5}")),
    PlanCase("flag-default-unicode-digits", "(got '５０')", plan=sub("{description: the application writes t}",
                                                                     "{description: d, default: '５０'}")),
    PlanCase("flag-default-with-percent", "(got '50%')", plan=sub("{description: the application writes t}",
                                                                  "{description: d, default: 50%}")),
    PlanCase("flag-description-missing", "flags.f: missing required key 'description'",
             plan=sub("{description: the application writes t}", "{default: on}")),
    PlanCase("stages-as-string", "steps[1].rollout.stages: input should be a valid tuple (got '10,50,100')",
             plan=sub("stages: [10, 50, 100]", "stages: '10,50,100'")),
    PlanCase("stage-as-float", "steps[1].rollout.stages[0]: input should be a valid integer (got 10.5)",
             plan=sub("stages: [10, 50, 100]", "stages: [10.5, 100]")),
    PlanCase("stage-as-boolean", "steps[1].rollout.stages[0]: input should be a valid integer (got True)",
             plan=sub("stages: [10, 50, 100]", "stages: [true, 100]")),
    PlanCase("batch-size-as-string", "backfills[0].batch_size: input should be a valid integer (got '100')",
             plan=sub("batch_size: 5000", "batch_size: '100'")),
    PlanCase("backfill-set-as-string", "backfills[0].set: input should be a valid dictionary (got 'v = 1')",
             plan=sub('set: {v: "1"}', 'set: "v = 1"')),
    PlanCase("backfill-key-as-mapping", "backfills[0].key: input should be a valid tuple", plan=backfill("key: {id: 1}")),
    PlanCase("backfill-on-error-unknown", "backfills[0].on_error: input should be 'stop' or 'record' (got 'ignore')",
             plan=backfill("on_error: ignore")),
    PlanCase("allow-without-reason", "steps[0].allow[0].reason: string should have at least 1 character",
             plan=step_a("    allow:\n      - {rule: ban-drop-table, reason: ''}\n")),
    PlanCase("operation-columns-as-string", "input should be a valid tuple (got 'id')",
             plan=step_a("    operations:\n      - {op: create_index, name: ta_s, table: ta, columns: id}\n")),
    # numbers and durations out of range
    PlanCase("lock-timeout-0ms", "timeouts.lock: 0 turns PostgreSQL's lock_timeout off", plan=timeouts("{lock: 0ms}")),
    PlanCase("lock-timeout-integer-0", "timeouts.lock: 0 turns PostgreSQL's lock_timeout off", plan=timeouts("{lock: 0}")),
    PlanCase("statement-timeout-0s", "timeouts.statement: 0 turns PostgreSQL's statement_timeout off",
             plan=timeouts("{statement: 0s}")),
    PlanCase("step-lock-timeout-0h", "steps[0].timeouts.lock: 0 turns PostgreSQL's lock_timeout off",
             plan=step_a("    timeouts: {lock: 0h}\n")),
    PlanCase("lock-timeout-beyond-postgres", "timeouts.lock: 2160000000ms is longer than the longest duration PostgreSQL accepts",
             plan=timeouts("{lock: 600h}")),
    PlanCase("lock-timeout-30-digits", "is longer than the longest duration PostgreSQL accepts",
             plan=timeouts("{lock: " + "9" * 30 + "}")),
    PlanCase("lock-timeout-400-digits", "is not a duration", plan=timeouts("{lock: '" + "9" * 400 + "ms'}")),
    PlanCase("lock-timeout-negative", "timeouts.lock: input should be greater than or equal to 0 (got -5)",
             plan=timeouts("{lock: -5}")),
    PlanCase("lock-timeout-negative-string", "timeouts.lock: '-5ms' is not a duration", plan=timeouts("{lock: -5ms}")),
    PlanCase("lock-timeout-float", "timeouts.lock: input should be a valid integer (got 1.5)", plan=timeouts("{lock: 1.5}")),
    PlanCase("lock-timeout-decimal-string", "timeouts.lock: '1.5s' is not a duration", plan=timeouts("{lock: 1.5s}")),
    PlanCase("lock-timeout-fullwidth-digits", "timeouts.lock: '２００ms' is not a duration", plan=timeouts("{lock: ２００ms}")),
    PlanCase("lock-timeout-arabic-indic-digits", "timeouts.lock: '٢٠٠ms' is not a duration", plan=timeouts("{lock: ٢٠٠ms}")),
    PlanCase("lock-timeout-superscript", "timeouts.lock: '²s' is not a duration", plan=timeouts("{lock: ²s}")),
    PlanCase("lock-timeout-boolean", "timeouts.lock: input should be a valid integer (got True)", plan=timeouts("{lock: true}")),
    PlanCase("lock-timeout-infinity", "timeouts.lock: input should be a valid integer (got inf)", plan=timeouts("{lock: .inf}")),
    PlanCase("lock-timeout-nan", "timeouts.lock: input should be a valid integer (got nan)", plan=timeouts("{lock: .nan}")),
    PlanCase("lock-timeout-days", "timeouts.lock: '1d' is not a duration", plan=timeouts("{lock: 1d}")),
    PlanCase("retry-budget-empty", "timeouts.retry_budget: '' is not a duration", plan=timeouts("{retry_budget: ''}")),
    PlanCase("hold-huge", "steps[1].rollout.hold: 3599999996400000ms is longer than the longest duration",
             plan=sub("hold: 0s", "hold: 999999999h")),
    PlanCase("hold-negative", "steps[1].rollout.hold: '-1s' is not a duration", plan=sub("hold: 0s", "hold: -1s")),
    PlanCase("target-batch-time-huge", "backfills[0].target_batch_time: 86400000000ms is longer",
             plan=backfill("target_batch_time: 24000h")),
    PlanCase("pause-huge-integer", "backfills[0].pause: " + "9" * 20 + "ms is longer", plan=backfill("pause: " + "9" * 20)),
    PlanCase("batch-size-negative", "backfills[0].batch_size: input should be greater than or equal to 1 (got -1)",
             plan=sub("batch_size: 5000", "batch_size: -1")),
    PlanCase("batch-size-float", "backfills[0].batch_size: input should be a valid integer (got 10.0)",
             plan=sub("batch_size: 5000", "batch_size: 10.0")),
    PlanCase("stage-zero", "steps[1].rollout.stages[0]: input should be greater than or equal to 1 (got 0)",
             plan=sub("stages: [10, 50, 100]", "stages: [0, 100]")),
    PlanCase("stage-400-digits", "steps[1].rollout.stages[0]: input should be less than or equal to 100",
             plan=sub("stages: [10, 50, 100]", "stages: [" + "9" * 400 + ", 100]")),
    PlanCase("stages-empty", "steps[1].rollout: stages must rise and end at 100 (got [])", plan=sub("stages: [10, 50, 100]", "stages: []")),
    PlanCase("flag-default-negative", "(got -1)", plan=sub("{description: the application writes t}", "{description: d, default: -1}")),
    PlanCase("flag-environment-default-1000", "flags.f.environments.local: a flag value is on, off or a percentage",
             plan=sub("{description: the application writes t}", "{description: d, environments: {local: 1000}}")),
    # ids and names with odd characters
    PlanCase("id-uppercase", "steps[0].id: 'A' is not a valid name", plan=sub("id: a", "id: A")),
    PlanCase("id-with-dash", "steps[0].id: 'a-b' is not a valid name", plan=sub("id: a", "id: a-b")),
    PlanCase("id-with-space", "steps[0].id: 'a b' is not a valid name", plan=sub("id: a", "id: 'a b'")),
    PlanCase("id-with-newline", "steps[0].id: 'a\\nb' is not a valid name", plan=sub("id: a", 'id: "a\\nb"')),
    PlanCase("id-with-escape", "steps[0].id: 'a\\x1b[2J' is not a valid name", plan=sub("id: a", 'id: "a\\e[2J"')),
    PlanCase("id-with-nul", "steps[0].id: 'a\\x00' is not a valid name", plan=sub("id: a", 'id: "a\\0"')),
    PlanCase("id-64-characters", "is not a valid name: use lowercase letters", plan=sub("id: a", "id: a" + "b" * 63)),
    PlanCase("id-empty", "steps[0].id: '' is not a valid name", plan=sub("id: a", "id: ''")),
    PlanCase("id-path", "steps[0].id: '../a' is not a valid name", plan=sub("id: a", "id: ../a")),
    PlanCase("id-cyrillic-a", "steps[0].id: 'а' is not a valid name", plan=sub("id: a", "id: а")),
    PlanCase("id-sql", "is not a valid name", plan=sub("id: a", "id: \"a'); DROP TABLE ta; --\"")),
    PlanCase("flag-name-markup", "steps[1].flag: '[bold]f' is not a valid name", plan=sub("flag: f", "flag: '[bold]f'")),
    PlanCase("environment-name-escape", "'prod\\x1b]0;x\\x07' is not a valid name",
             plan=sub("  production:", '  "prod\\e]0;x\\a":')),
    PlanCase("backfill-name-semicolon", "backfills[0].name: 'fill;' is not a valid name", plan=sub("name: fill", "name: 'fill;'")),
    PlanCase("check-name-quote", "preconditions[0].name: \"pre'\" is not a valid name", plan=sub("{name: pre,", "{name: \"pre'\",")),
    PlanCase("backfill-column-injection", "'v = 1; DROP TABLE t; --' is not a valid name",
             plan=sub('set: {v: "1"}', 'set: {"v = 1; DROP TABLE t; --": "1"}')),
    PlanCase("dsn-env-with-space", "environments.production.dsn_env: 'NOT SET' is not a valid name",
             plan=sub("dsn_env: ROLLOUT_CORPUS_NEVER_SET", "dsn_env: NOT SET")),
]


def _build(case: PlanCase, root: Path) -> str:
    """The case's plan folder; returns what --plan names."""
    folder, outside = root / "plan", root / "outside"
    write_files(outside / "steps", "", {"0001_a.sql": "CREATE TABLE ta (id bigint);\n", "0001_a.rollback.sql": "DROP TABLE ta;\n"})
    (outside / "steps" / "rollout.yaml").unlink()
    (outside / "secret.sql").write_text(f"SELECT '{SECRET}';\n")
    path = write_files(folder, "", FILES)
    text = case.plan(PLAN) if callable(case.plan) else (case.plan if case.plan is not None else PLAN)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    for name, content in case.files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        if isinstance(content, _Kind):
            if content.name == "link":
                os.symlink(content.target.format(out=outside), target)
            elif content.name == "fifo":
                os.mkfifo(target)
            elif content.name == "folder":
                target.mkdir()
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return case.plan_path(folder) if case.plan_path else str(path)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in FILE_CASES + YAML_CASES])
def test_a_hostile_plan_is_refused_before_anything_runs(case, tmp_path):
    plan = _build(case, tmp_path)
    for command in (["check"], ["apply", "--dsn", NOWHERE]):  # apply: refused before connecting anywhere
        result = invoke("--plan", plan, *command)
        assert_safe(result, 2, case.message, f"{case.id}: {command[0]}")
        if plan and not case.plan_path:
            assert f"{plan}" in result.output, f"{case.id}: the plan file is not named: {result.output}"


# ---------------------------------------------------------------------------------------------
# CLI: arguments and DSNs, against one shared database none of them may change

@dataclass
class Shared:
    plan: str
    dsn: str
    folder: Path


@pytest.fixture(scope="module")
def shared(server, tmp_path_factory):
    """The plan applied: a done, b rolling out at 10% (its backfill done), f at 10%."""
    folder = tmp_path_factory.mktemp("shared")
    plan = write_files(folder, PLAN, FILES)
    name = create_database(server)
    dsn = with_password(server.url(name))
    for command in (["apply"], ["advance", "b"]):
        result = invoke("--plan", str(plan), "--dsn", dsn, *command)
        assert result.exit_code == 0, result.output
    yield Shared(str(plan), dsn, folder)
    drop_database(server, name)


@dataclass
class CliCase:
    id: str
    args: tuple
    code: int
    message: str | None
    dsn: bool = True  # pass the shared database's --dsn before the arguments
    logs: bool = False  # the command takes the environment's lock, then refuses: it may log its run
    env: dict = field(default_factory=dict)
    marks: tuple = ()


def C(id: str, *args: str, code: int = 2, message: str | None = None, **kw) -> CliCase:
    return CliCase(id, args, code, message, **kw)


NOT_A_STEP = "no step 'nope' in"
EMPTY_STEP = "an empty STEP names no step"
UNREACHABLE = "cannot connect to environment 'local' at"
CLI_CASES = [
    # STEP names that are no step, for every command that takes one
    *[C(f"unknown-step-{'-'.join(a[:-1])}", *a, message=NOT_A_STEP) for a in (
        ("apply", "nope"), ("plan", "nope"), ("plan", "--rollback", "nope"), ("verify", "nope"), ("rollback", "nope"),
        ("eject", "nope"), ("advance", "nope"), ("abort", "nope"), ("backfill", "status", "nope"),
        ("backfill", "run", "nope"), ("backfill", "resume", "nope"), ("backfill", "pause", "nope"),
        ("backfill", "cancel", "nope"))],
    # an empty STEP (`rollout apply "$STEP"` with STEP unset) names no step: never every step
    C("empty-step-apply", "apply", "", message=EMPTY_STEP),
    C("empty-step-plan", "plan", "", message=EMPTY_STEP),
    C("empty-step-verify", "verify", "", message=EMPTY_STEP),
    C("empty-step-advance", "advance", "", message=EMPTY_STEP),
    C("empty-step-backfill-status", "backfill", "status", "", message=EMPTY_STEP),
    C("blank-step-apply", "apply", "  ", message=EMPTY_STEP),
    C("empty-step-rollback", "rollback", "", message="no step '' in"),
    C("empty-step-abort", "abort", "", message="no step '' in"),
    C("step-upper-case", "apply", "A", message="no step 'A' in"),
    C("step-with-sql", "apply", "a; DROP TABLE ta", message="no step 'a; DROP TABLE ta' in"),
    C("step-hostile", "apply", HOSTILE, message=f"no step '{SHOWN}"),
    C("step-without-a-flag-advance", "advance", "a", message="step 'a' has no flag to roll out", logs=True),
    C("step-without-a-flag-abort", "abort", "a", message="step 'a' has no flag to abort"),
    C("step-without-backfills", "backfill", "run", "a", message="step 'a' declares no backfills"),
    C("step-and-all", "advance", "b", "--all", message="name a STEP or pass --all (not both)"),
    C("watch-nothing", "advance", "--watch", message="name a STEP or pass --all"),
    C("rollback-production-without-yes", "--env", "production", "rollback", "b", message="pass --yes"),
    C("apply-production-without-yes", "--env", "production", "apply", message="asks for confirmation before applying"),
    # flags that are no flag, and flag values that are none
    C("unknown-flag-get", "flags", "get", "nope", message="no flag 'nope' in"),
    C("unknown-flag-set", "flags", "set", "nope", "on", message="no flag 'nope' in"),
    C("unknown-flag-history", "flags", "history", "nope", message="no flag 'nope' in"),
    C("empty-flag-name", "flags", "get", "", message="no flag '' in"),
    C("hostile-flag-name", "flags", "history", HOSTILE, message=f"no flag '{SHOWN}"),
    *[C(f"flag-value-{name}", "flags", "set", "f", value, message="a flag value is on, off or a percentage from 0 to 100")
      for name, value in (("empty", ""), ("arabic-indic", "٥٠"), ("fullwidth", "１００"), ("superscript", "²"),
                          ("decimal", "50.5"), ("exponent", "1e2"), ("hex", "0x10"), ("plus", "+50"), ("101", "101"),
                          ("400-digits", "9" * 400), ("two-percent-signs", "50%%"), ("underscore", "1_0"),
                          ("hostile", HOSTILE), ("yes", "yes"))],
    C("flag-value-negative-zero", "flags", "set", "f", "-0", message="No such option '-0'"),
    # unknown options and commands
    C("unknown-option-apply", "apply", "--nope", message="No such option '--nope'"),
    C("unknown-option-before-command", "--nope", "status", message="No such option '--nope'"),
    C("option-of-another-command", "status", "--limit", "5", message="No such option '--limit'"),
    C("unknown-option-flags-set", "flags", "set", "f", "on", "--force", message="No such option '--force'"),
    C("unknown-option-seed", "db", "seed", "--yes", message="No such option '--yes'"),
    C("extra-argument", "status", "extra", message="unexpected extra argument (extra)"),
    C("unknown-command", "nope", message="No such command 'nope'"),
    C("unknown-subcommand-flags", "flags", "nope", message="No such command 'nope'"),
    C("unknown-subcommand-backfill", "backfill", "nope", message="No such command 'nope'"),
    C("unknown-subcommand-db", "db", "nope", message="No such command 'nope'"),
    C("unknown-format", "plan", "--format", "html", message="'html' is not one of 'text', 'json', 'markdown'"),
    C("rollback-preview-without-step", "plan", "--rollback", message="--rollback previews the rollback of one step"),
    C("changed-since-outside-git", "plan", "--changed-since", HOSTILE, message="git could not tell what changed"),
    # numbers: Unicode digits, huge, negative, empty
    C("limit-arabic-indic-digits", "events", "--limit", "١٠", message="'١٠' is not a valid integer (digits 0-9)"),
    C("limit-superscript", "events", "--limit", "²", message="'²' is not a valid integer"),
    C("limit-underscore", "events", "--limit", "1_0", message="'1_0' is not a valid integer"),
    C("limit-2-to-the-64", "events", "--limit", str(2 ** 64), message="is not in the range 1<=x<=1000000"),
    C("limit-a-million-and-one", "events", "--limit", "1000001", message="is not in the range 1<=x<=1000000"),
    C("limit-negative", "events", "--limit", "-1", message="-1 is not in the range 1<=x<=1000000"),
    C("limit-empty", "events", "--limit", "", message="'' is not a valid integer"),
    C("limit-exponent", "events", "--limit", "1e3", message="'1e3' is not a valid integer"),
    C("rows-devanagari-digits", "db", "seed", "--rows", "१०", message="'१०' is not a valid integer (digits 0-9)"),
    C("rows-beyond-postgres", "db", "seed", "--rows", "2147483648", message="is not in the range 1<=x<=2147483647"),
    C("rows-30-digits", "db", "seed", "--rows", "9" * 30, message="is not in the range 1<=x<=2147483647"),
    C("rows-zero", "db", "seed", "--rows", "0", message="0 is not in the range"),
    C("rows-empty", "db", "seed", "--rows", "", message="'' is not a valid integer"),
    C("interval-fullwidth", "advance", "b", "--watch", "--interval", "９s", message="--interval: '９s' is not a duration"),
    C("interval-huge", "advance", "b", "--watch", "--interval", "99999999999h", message="is longer than the longest duration"),
    C("interval-400-digits", "advance", "b", "--watch", "--interval", "9" * 400 + "ms", message="is not a duration"),
    C("interval-negative", "advance", "b", "--watch", "--interval", "-1s", message="'-1s' is not a duration"),
    C("interval-empty", "advance", "b", "--watch", "--interval", "", message="--interval: '' is not a duration"),
    C("interval-without-unit", "advance", "b", "--watch", "--interval", "10", message="'10' is not a duration"),
    # environments and plans named oddly
    C("environment-empty", "--env", "", "status", message="no environment '' in"),
    C("environment-hostile", "--env", HOSTILE, "status", message=f"no environment '{SHOWN}"),
    C("environment-unknown-after-command", "status", "--env", "prod", message="no environment 'prod' in"),
    C("environment-dsn-variable-unset", "--env", "production", "status", dsn=False,
      message="reads its DSN from $ROLLOUT_CORPUS_NEVER_SET, which is not set"),
    C("environment-dsn-variable-empty", "--env", "production", "flags", "list", dsn=False,
      env={"ROLLOUT_CORPUS_NEVER_SET": ""}, message="reads its DSN from $ROLLOUT_CORPUS_NEVER_SET, which is not set"),
    C("rollout-dsn-variable-empty", "--env", "production", "events", dsn=False, env={"ROLLOUT_DSN": ""},
      message="reads its DSN from $ROLLOUT_CORPUS_NEVER_SET, which is not set"),
    C("plan-missing", "--plan", "/nonexistent/rollout.yaml", "status", message="no such file; create it"),
    C("plan-empty-after-command", "check", "--plan", "", message="--plan (or ROLLOUT_PLAN) is empty"),
    C("init-over-an-existing-plan", "init", message="exists already: rollout init never overwrites a file"),
    C("init-variable-with-space", "init", "--plan", "/nonexistent/new/rollout.yaml", "--dsn-env", "BAD NAME",
      message="--dsn-env 'BAD NAME' is not an environment variable name"),
    C("init-variable-hostile", "init", "--plan", "/nonexistent/new/rollout.yaml", "--dsn-env", HOSTILE,
      message=f"--dsn-env '{SHOWN}"),
    C("init-variable-empty", "init", "--plan", "/nonexistent/new/rollout.yaml", "--dsn-env", "",
      message="--dsn-env '' is not an environment variable name"),
    C("schema-unknown-option", "schema", "--nope", message="No such option '--nope'"),
    # --dsn empty: never some other database in its place
    C("dsn-empty-status", "status", "--dsn", "", dsn=False, message="--dsn is empty"),
    C("dsn-empty-apply", "apply", "--dsn", "", dsn=False, message="--dsn is empty"),
    C("dsn-empty-flags-set", "flags", "set", "f", "off", "--dsn", "", dsn=False, message="--dsn is empty"),
    C("dsn-blank-events", "events", "--dsn", "   ", dsn=False, message="--dsn is empty"),
    C("dsn-empty-before-command", "--dsn", "", "plan", dsn=False, message="--dsn is empty"),
    C("dsn-empty-db-reset", "db", "reset", "--yes", "--dsn", "", dsn=False, message="never a database named by --dsn"),
    C("dsn-db-reset", "db", "reset", "--yes", message="never a database named by --dsn"),
    # DSNs that are unparseable, hold a '%' in the password, or point nowhere: the password never shows
    C("dsn-percent-in-password", "status", "--dsn", f"postgresql://u:pa%ss-{SECRET}@localhost/db", dsn=False,
      message="invalid percent-encoded token"),
    C("dsn-percent-at-end-of-password", "apply", "--dsn", f"postgresql://u:{SECRET}%@localhost/db", dsn=False,
      message=UNREACHABLE),
    C("dsn-percent-z-in-password", "flags", "list", "--dsn", f"postgresql://u:%zz{SECRET}@127.0.0.1:1/db", dsn=False,
      message="<unparseable DSN>"),
    C("dsn-not-a-dsn", "events", "--dsn", f"not a dsn {SECRET}", dsn=False, message="<unparseable DSN>"),
    C("dsn-keyword-without-value", "verify", "--dsn", f"password={SECRET} nonsense", dsn=False,
      message="missing \"=\" after \"nonsense\""),
    C("dsn-unclosed-ipv6", "backfill", "status", "--dsn", f"postgresql://u:{SECRET}@[::1:1/db", dsn=False,
      message="<unparseable DSN>"),
    C("dsn-unknown-parameter", "plan", "--dsn", f"postgresql://u:{SECRET}@127.0.0.1:1/db?bogus=1", dsn=False,
      message="invalid URI query parameter"),
    C("dsn-bad-sslmode", "flags", "history", "f", "--dsn", f"postgresql://u:{SECRET}@127.0.0.1:1/db?sslmode=bogus",
      dsn=False, message="invalid sslmode value"),
    C("dsn-port-not-a-number", "status", "--dsn", f"postgresql://u:{SECRET}@127.0.0.1:port/db", dsn=False,
      message=UNREACHABLE),
    C("dsn-refused", "apply", "--dsn", f"postgresql://u:{SECRET}@127.0.0.1:1/db?connect_timeout=2", dsn=False,
      message=f"{UNREACHABLE} postgresql://u:***@127.0.0.1:1/db: connection failed: connection to server at "
              "\"127.0.0.1\", port 1 failed: Connection refused"),
    C("dsn-refused-keywords", "rollback", "b", "--dsn", f"host=127.0.0.1 port=1 user=u password='{SECRET} x  y'",
      dsn=False, message="Connection refused"),
    C("dsn-socket-folder-missing", "abort", "b", "--dsn", f"postgresql://u:{SECRET}@/db?host=/nonexistent/socket",
      dsn=False, message="postgresql://u:***@/nonexistent/socket:5432/db"),
    C("dsn-socket-folder-missing-flags-set", "flags", "set", "f", "off", "--dsn",
      f"postgresql://u:{SECRET}@/db?host=/nonexistent/socket", dsn=False, message=UNREACHABLE),
    C("dsn-escape-in-database-name", "backfill", "pause", "b", "--dsn",
      f"postgresql://u:{SECRET}@127.0.0.1:1/d\x1b]0;x\x07b", dsn=False, message="1/d\\x1b]0;x\\x07b"),
    C("dsn-encoded-at-in-password", "db", "seed", "--dsn", "postgresql://u:Zq9%2Dcorpus%2Ds3cret@127.0.0.1:1/db",
      dsn=False, message=UNREACHABLE),
    C("dsn-passfile-elsewhere", "status", "--dsn", f"postgresql://u:{SECRET}@127.0.0.1:1/db?passfile=/etc/shadow",
      dsn=False, message=UNREACHABLE),
    C("rollout-dsn-variable-refused", "status", dsn=False, env={"ROLLOUT_DSN": NOWHERE}, message=UNREACHABLE),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CLI_CASES])
def test_a_hostile_argument_is_refused_and_changes_nothing(case, shared):
    before = fingerprint(shared.dsn, logs=not case.logs)
    base = ["--plan", shared.plan] + (["--dsn", shared.dsn] if case.dsn else [])
    result = invoke(*base, *case.args, env=case.env)
    assert_safe(result, case.code, case.message, case.id)
    assert fingerprint(shared.dsn, logs=not case.logs) == before, f"{case.id}: the database changed"
    assert not (shared.folder / ".rollout").exists(), f"{case.id}: an embedded server was started"


# ---------------------------------------------------------------------------------------------
# TERMINAL: hostile text from operators, files and data, through every command that prints it

TERMINAL_PLAN = PLAN.replace("title: A table", 'title: "A \\e]0;pwned\\a [/] [bold]"').replace(
    "{description: the application writes t}", '{description: "writes t \\e[2J [/]"}') + """\
  - id: c
    title: C
    priority: low
    migrate: steps/c
    verify:
      - {name: no_bad_rows, sql: "SELECT s FROM tc WHERE s LIKE 'bad%'"}
  - id: d
    title: D
    priority: low
    depends_on: [c]
    migrate: steps/d
"""
TERMINAL_FILES = {
    **FILES,
    "steps/c/0004_c.sql": "CREATE TABLE tc (id bigint PRIMARY KEY, s text);\n"
                          "INSERT INTO tc VALUES (1, E'ok');\n",
    "steps/c/0004_c.rollback.sql": "DROP TABLE tc;\n",
    "steps/c/0005_\x1b]0;pwned\x07 [bold].sql": "SELECT 1;\n",
    "steps/c/0005_\x1b]0;pwned\x07 [bold].rollback.sql": "SELECT 1;\n",
    "steps/d/0006_d.sql": "CREATE TABLE td (s text CHECK (s NOT LIKE 'bad%'));\n"
                          "INSERT INTO td VALUES (E'bad\\x1b]0;pwned\\x07 [/] \\x1b[2J\\u202e');\n",
    "steps/d/0006_d.rollback.sql": "DROP TABLE td;\n",
}


@dataclass
class Terminal:
    plan: str
    dsn: str
    name: str


@pytest.fixture(scope="module")
def terminal(server, tmp_path_factory):
    """A plan folder whose path holds markup and escapes, applied by a hostile actor: step d fails on
    a row PostgreSQL quotes back; a run that actor left open; a backfill error quoting a row."""
    folder = tmp_path_factory.mktemp("t[bold]x") / "p \x1b]0;pwned\x07 [/]"
    plan = write_files(folder, TERMINAL_PLAN, TERMINAL_FILES)
    name = create_database(server)
    dsn = with_password(server.url(name))
    result = invoke("--plan", str(plan), "--dsn", dsn, "apply", env={"ROLLOUT_ACTOR": HOSTILE})
    assert result.exit_code == 1 and "Failing row contains" in result.output, result.output
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("INSERT INTO tc VALUES (2, %s)", ("bad" + HOSTILE,))  # what verify's check will find
        db.execute("INSERT INTO rollout.runs (env, command, actor, backend_pid) VALUES ('local', %s, %s, 1)",
                   (f"apply {HOSTILE}", HOSTILE))  # a run its command left unfinished
        db.execute("UPDATE rollout.backfills SET error = %s", (f"row (id=3) cannot be converted: {HOSTILE}",))
    yield Terminal(str(plan), dsn, name)
    drop_database(server, name)


# They share one database and run in this order: the first that takes the environment's lock
# reports (and closes) the run the hostile actor left open; later ones see the flag as earlier ones set it.
TERMINAL_CASES = [
    # (id, arguments, exit code, what the output must show: the hostile text, escaped)
    ("check-plan-path", ("check",), 0, "t[bold]x"),
    ("plan-title", ("plan",), 0, "a [done] A \\x1b]0;pwned\\x07 [/] [bold]"),
    ("plan-markdown", ("plan", "c", "--rollback", "--format", "markdown"), 0, "0005_\\x1b]0;pwned"),
    ("plan-json", ("plan", "--json"), 0, "\\u001b]0;pwned"),
    ("plan-rollback-preview", ("plan", "--rollback", "c"), 0, "0005_\\x1b]0;pwned"),
    ("apply-left-open-run", ("apply", "a"), 0, f"`rollout apply {SHOWN}"),  # the first to take the lock
    ("apply-row-quoted-by-postgres", ("apply", "d"), 1, "Failing row contains (bad\\x1b]0;pwned"),
    ("status-error-quoting-a-row", ("status",), 0, "d"),
    ("status-json", ("status", "--json"), 0, "\\u001b]0;pwned"),
    ("events-actor-and-rows", ("events", "--limit", "200"), 0, SHOWN),
    ("events-json", ("events", "--json"), 0, "\\u001b]0;pwned"),
    ("flags-list-actor-and-description", ("flags", "list"), 0, "writes t \\x1b[2J [/]"),
    ("flags-history-markup-actor", ("flags", "history", "f"), 0, "[/] [bold red]"),
    ("flags-history-json", ("flags", "history", "f", "--json"), 0, "\\u001b]0;pwned"),
    ("flags-get-hostile-subject", ("flags", "get", "f", "--subject", HOSTILE), 0, f"{SHOWN}\\x07 [/] [bold red]"),
    ("flags-set-hostile-reason-and-actor", ("flags", "set", "f", "10", "--reason", HOSTILE, "--actor", HOSTILE), 0,
     "flag f in local"),
    ("flags-set-markup-actor-before-command", ("--actor", "[/]", "flags", "set", "f", "off"), 0, "flag f in local"),
    ("flags-history-closing-tag-actor", ("flags", "history", "f"), 0, "[/]"),
    ("abort-hostile-reason", ("abort", "b", "--reason", HOSTILE), 0, f"rollout aborted: flag f off (was off): {SHOWN}"),
    ("verify-check-finding-hostile-rows", ("verify", "c"), 1, f"s='bad{SHOWN}"),
    ("backfill-status-error-quoting-a-row", ("backfill", "status"), 0, "\\x1b]0;pwned"),
    ("backfill-status-json", ("backfill", "status", "--json"), 0, "\\u001b]0;pwned"),
    ("hostile-step-argument", ("rollback", HOSTILE), 2, f"no step '{SHOWN}"),
    ("hostile-environment-variable-actor", ("events", "--limit", "3"), 0, "events in local"),
]


@pytest.mark.parametrize("args, code, shown", [pytest.param(a, c, s, id=i) for i, a, c, s in TERMINAL_CASES])
def test_hostile_text_is_shown_never_acted_on(args, code, shown, terminal):
    result = invoke("--plan", terminal.plan, "--dsn", terminal.dsn, *args, env={"ROLLOUT_ACTOR": HOSTILE})
    assert_safe(result, code, shown, " ".join(args))


# ---------------------------------------------------------------------------------------------
# HAND_EDITS: rollout's state changed by a superuser past its guards. Each case: a copy of a
# database where a is done and b rolls out at 10%; the edit; one command; its outcome. None may
# run b's contract (the table `contracted`), none may act on what it cannot trust.

@pytest.fixture(scope="module")
def applied(server, tmp_path_factory):
    """A template database (the shared state above) and its plan."""
    folder = tmp_path_factory.mktemp("applied")
    plan = write_files(folder, PLAN, FILES)
    name = create_database(server)
    dsn = server.url(name)
    for command in (["apply"], ["advance", "b"]):
        result = invoke("--plan", str(plan), "--dsn", dsn, *command)
        assert result.exit_code == 0, result.output
    yield str(plan), name
    drop_database(server, name)


@dataclass
class EditCase:
    id: str
    edit: tuple[str, ...]  # SQL, run as a superuser with triggers off (session_replication_role = replica)
    args: tuple[str, ...]
    code: int
    message: str
    unchanged: str | None = "state"  # "all": nothing written at all; "state": all but the run and event logs
    marks: tuple = ()


def E(id: str, edit: str | tuple, *args: str, code: int, message: str, **kw) -> EditCase:
    return EditCase(id, (edit,) if isinstance(edit, str) else edit, args, code, message, **kw)


UNKNOWN_STATE = "UPDATE rollout.steps SET state = 'bogus' WHERE step_id = 'b'"
STAGE_LAST = "UPDATE rollout.steps SET stage = 2 WHERE step_id = 'b'"
CONTRACT_WITHOUT_FLAG = "step 'b' would go on with its contract (the finalize migrations), but flag f is 10%"
LOST = "yoyo's log (_yoyo_migration) records migrations of steps rollout's records call pending"
EDIT_CASES = [
    # states rollout does not know
    E("unknown-state-apply", UNKNOWN_STATE, "apply", code=2, message="step 'b' records the state 'bogus', which is not one of rollout's"),
    E("unknown-state-rollback", UNKNOWN_STATE, "rollback", "b", code=2, message="records the state 'bogus'"),
    E("unknown-state-advance", UNKNOWN_STATE, "advance", "b", code=2, message="records the state 'bogus'"),
    E("unknown-state-advance-all", UNKNOWN_STATE, "advance", "--all", code=2, message="records the state 'bogus'"),
    E("unknown-state-abort", UNKNOWN_STATE, "abort", "b", code=2, message="records the state 'bogus'"),
    E("unknown-state-backfill-run", UNKNOWN_STATE, "backfill", "run", "b", code=2, message="records the state 'bogus'"),
    E("unknown-state-verify", "UPDATE rollout.steps SET state = 'Done' WHERE step_id = 'a'", "verify", code=2,
      message="step 'a' records the state 'Done'"),
    E("unknown-state-status-shows-it", UNKNOWN_STATE, "status", code=0, message="bogus", unchanged="all"),
    E("empty-state-apply", "UPDATE rollout.steps SET state = '' WHERE step_id = 'a'", "apply", code=2,
      message="step 'a' records the state ''"),
    E("ghost-step-row-ignored", "INSERT INTO rollout.steps (env, step_id, state, updated_by) "
                                "VALUES ('local', 'ghost', 'bogus', 'x')", "apply", code=0, message="rolling out",
      unchanged=None),
    # rollout stages beyond, before, or at the end of the rollout
    E("stage-beyond-apply", "UPDATE rollout.steps SET stage = 7 WHERE step_id = 'b'", "apply", code=2,
      message="step 'b' records stage 8 of a rollout with 3 stages"),
    E("stage-beyond-advance-all", "UPDATE rollout.steps SET stage = 99 WHERE step_id = 'b'", "advance", "--all", code=2,
      message="records stage 100 of a rollout with 3 stages"),
    E("stage-negative-apply", "UPDATE rollout.steps SET stage = -1 WHERE step_id = 'b'", "apply", code=2,
      message="records stage 0 of a rollout with 3 stages"),
    E("stage-negative-advance", "UPDATE rollout.steps SET stage = -1 WHERE step_id = 'b'", "advance", "b", code=2,
      message="records stage 0 of a rollout with 3 stages"),
    E("stage-negative-status", "UPDATE rollout.steps SET stage = -1 WHERE step_id = 'b'", "status", "--json", code=0,
      message="stage 0 of 3: edited by hand (`rollout abort b`)", unchanged="all"),
    E("stage-last-with-flag-at-10-apply", STAGE_LAST, "apply", code=0, message="flag f is 10%, not on"),
    E("stage-last-with-flag-at-10-advance", STAGE_LAST, "advance", "b", code=1, message="flag f is 10%, not on"),
    E("stage-last-with-flag-off-advance", (STAGE_LAST, "UPDATE rollout.flags SET enabled = false, percent = 0"),
      "advance", "b", code=1, message="flag f is off, not on"),
    E("finalizing-with-flag-at-10", "UPDATE rollout.steps SET state = 'finalizing' WHERE step_id = 'b'", "apply",
      code=1, message=CONTRACT_WITHOUT_FLAG),
    E("failed-in-finalize-with-flag-at-10", "UPDATE rollout.steps SET state = 'failed', phase = 'finalize' "
                                            "WHERE step_id = 'b'", "apply", code=1, message=CONTRACT_WITHOUT_FLAG),
    E("done-without-its-contract", "UPDATE rollout.steps SET state = 'done' WHERE step_id = 'b'", "apply", code=0,
      message="nothing to do"),
    E("done-without-its-contract-status", "UPDATE rollout.steps SET state = 'done' WHERE step_id = 'b'", "status",
      code=0, message="flag f at 10%, done expects on", unchanged="all"),
    # rows deleted, tables emptied, the schema dropped while yoyo's log remains
    E("steps-deleted-apply", "DELETE FROM rollout.steps", "apply", code=2, message=LOST, unchanged="all"),
    E("step-deleted-advance", "DELETE FROM rollout.steps WHERE step_id = 'b'", "advance", "b", code=2,
      message="call pending: b (0002_b); rollout.steps has no record of them in environment 'local'", unchanged="all"),
    E("steps-truncated-rollback", "TRUNCATE rollout.steps", "rollback", "a", code=2, message=LOST, unchanged="all"),
    E("steps-deleted-status", "DELETE FROM rollout.steps", "status", code=0,
      message="a, b: pending in rollout's records, yet yoyo's log", unchanged="all"),
    E("schema-dropped-apply", "DROP SCHEMA rollout CASCADE", "apply", code=2,
      message="; the rollout schema is missing from this database. rollout's records were deleted", unchanged="all"),
    E("schema-dropped-verify", "DROP SCHEMA rollout CASCADE", "verify", code=2, message=LOST, unchanged="all"),
    E("schema-dropped-seed", "DROP SCHEMA rollout CASCADE", "db", "seed", "--rows", "5", code=2, message=LOST,
      unchanged="all"),
    E("schema-dropped-status", "DROP SCHEMA rollout CASCADE", "status", code=0,
      message="pending in rollout's records, yet yoyo's log", unchanged="all"),
    E("steps-table-dropped-apply", "DROP TABLE rollout.steps CASCADE", "apply", code=2, message=LOST, unchanged="all"),
    E("flags-emptied-status", "TRUNCATE rollout.flags, rollout.flag_history", "status", code=0,
      message="flag f is off, stage 1/3 expects 10%", unchanged="all"),
    E("flags-table-dropped-apply", "DROP TABLE rollout.flags", "apply", code=2,
      message="rollout.flags is missing from this database's rollout schema"),
    E("flags-table-dropped-status", "DROP TABLE rollout.flags", "status", code=2,
      message="relation \"rollout.flags\" does not exist: this database's rollout schema lacks a table", unchanged="all"),
    E("flags-table-dropped-flags-list", "DROP TABLE rollout.flags", "flags", "list", code=2,
      message="lacks a table of its own", unchanged="all"),
    E("flags-table-dropped-kill-switch", "DROP TABLE rollout.flags", "flags", "set", "f", "off", code=2,
      message="this database's rollout schema lacks rollout.flags (dropped by hand)", unchanged="all"),
    E("events-table-dropped-events", "DROP TABLE rollout.events", "events", code=2, message="lacks a table of its own",
      unchanged="all"),
    E("events-table-dropped-apply-puts-it-back", "DROP TABLE rollout.events", "apply", code=0, message="rolling out",
      unchanged=None),
    E("meta-emptied-apply-repairs", "TRUNCATE rollout.meta", "apply", code=0, message="rolling out", unchanged=None),
    # rollout.meta edited
    E("schema-version-text-apply", "UPDATE rollout.meta SET value = '\"four\"' WHERE key = 'schema_version'", "apply",
      code=2, message="rollout.meta records the schema version 'four', not a version number"),
    E("schema-version-object-advance", "UPDATE rollout.meta SET value = '{\"v\": 4}' WHERE key = 'schema_version'",
      "advance", "b", code=2, message="records the schema version {'v': 4}"),
    E("schema-version-text-kill-switch", "UPDATE rollout.meta SET value = '\"four\"' WHERE key = 'schema_version'",
      "flags", "set", "f", "off", code=2, message="records the schema version 'four'", unchanged="all"),
    E("schema-version-from-the-future", "UPDATE rollout.meta SET value = '99' WHERE key = 'schema_version'", "apply",
      code=2, message="version 99, newer than this rollout"),
    # backfill checkpoints that do not fit the backfill's key
    *[E(f"checkpoint-{name}", f"UPDATE rollout.backfills SET state = 'running', cursor = '{cursor}'", "backfill", "run",
        "b", code=1, message=f"holds {shown}, not one value for each of its key's columns (id)")
      for name, cursor, shown in (("string", '"abc"', "'abc'"), ("wrong-type", '["abc"]', "['abc']"),
                                  ("object", '[{"a": 1}]', "[{'a': 1}]"), ("null", "[null]", "[None]"),
                                  ("beyond-the-key-type", "[99999999999999999999999]", "[99999999999999999999999]"),
                                  ("two-values", '["1", "2"]', "['1', '2']"), ("empty", "[]", "[]"),
                                  ("nested", '[["1"]]', "[['1']]"), ("boolean", "[true]", "[True]"))],
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in EDIT_CASES])
def test_state_edited_by_hand_is_refused_or_repaired_never_trusted(case, server, applied):
    plan, template = applied
    name = create_database(server, template)
    try:
        dsn = with_password(server.url(name))
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("SET session_replication_role = replica")  # what a superuser can do: triggers off
            for statement in case.edit:
                db.execute(statement)
        before = fingerprint(dsn, logs=case.unchanged == "all") if case.unchanged else None
        result = invoke("--plan", plan, "--dsn", dsn, *case.args)
        assert_safe(result, case.code, case.message, case.id)
        if before is not None:
            assert fingerprint(dsn, logs=case.unchanged == "all") == before, f"{case.id}: the database changed"
        with psycopg.connect(dsn, autocommit=True) as db:
            assert db.execute("SELECT to_regclass('contracted')").fetchone() == (None,), f"{case.id}: b's contract ran"
    finally:
        drop_database(server, name)


def test_the_corpus_is_larger_than_the_one_the_issue_was_found_with():
    cases = FILE_CASES + YAML_CASES + CLI_CASES + TERMINAL_CASES + EDIT_CASES
    assert len(cases) > 125
    assert len({c[0] if isinstance(c, tuple) else c.id for c in cases}) == len(cases)  # ids are unique


def test_a_check_ending_in_a_comment_is_still_a_check(server, applied, tmp_path):
    """A check file whose last line is a `-- comment` (the corpus found it failing with a syntax
    error: the comment swallowed the parenthesis rollout wraps the query in)."""
    plan, template = applied
    folder = tmp_path / "plan"
    shutil.copytree(Path(plan).parent, folder)
    (folder / "checks" / "post.sql").write_text("SELECT id FROM ta WHERE false -- none: every row is fine\n")
    name = create_database(server, template)
    try:
        result = invoke("--plan", str(folder / "rollout.yaml"), "--dsn", with_password(server.url(name)), "verify", "a")
        assert_safe(result, 0, "all checks passed", "verify a")
    finally:
        drop_database(server, name)


def test_nothing_the_corpus_did_stored_a_secret(shared, terminal):
    for dsn in (shared.dsn, terminal.dsn):
        with psycopg.connect(dsn, autocommit=True) as db:
            for (table,) in db.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                       "WHERE schemaname = 'rollout' OR tablename LIKE '\\_yoyo%'").fetchall():
                rows = db.execute(sql.SQL("SELECT coalesce(string_agg(t::text, ' '), '') FROM {} AS t").format(
                    sql.SQL(table))).fetchone()[0]
                assert SECRET not in rows, table
