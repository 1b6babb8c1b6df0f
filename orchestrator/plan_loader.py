"""Load rollout.yaml strictly: every problem, located at file:line:column, reported at once.

Pure: reads the plan and the files it names, never a database. YAML is composed into nodes
first so each value keeps its position; pydantic validates the shape; then the checks the
schema cannot express (ids, dependencies, files, migrations) run over the validated model.
"""

from __future__ import annotations

import difflib
import glob
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache

import pglast
import yaml
from pydantic import ValidationError
from yoyo.exceptions import BadMigration
from yoyo.migrations import read_migrations, read_sql_migration, topological_sort
from yoyo.topologicalsort import CycleError

from .errors import PlanError
from . import operations
from .analysis import analyze
from .plan import Check, Direction, Migration, Plan, PlanModel, json_schema
from .plan_parts import NAME_RULE, PATTERN_RULES, StagedRollout

MAX_FILE_BYTES = 1024 * 1024  # a migration, a check or a seed file
BOM = b"\xef\xbb\xbf"
MAX_PLAN_BYTES = 1024 * 1024
MAX_NODES = 50_000  # an alias bomb expands far beyond this; a real plan stays far below

Path = tuple  # a path into the document: keys and list indexes


@dataclass
class _Document:
    """The plan's text with the position of every value and key in it."""

    file: str
    values: dict[Path, yaml.Mark] = field(default_factory=dict)
    keys: dict[Path, yaml.Mark] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def at(self, path: Path, message: str, *, key: bool = False) -> None:
        """Record a problem at the value (or key) `path`, or at its nearest located parent."""
        marks = self.keys if key else self.values
        probe = tuple(path)
        while probe not in marks and probe:
            probe = probe[:-1]
            marks = self.values
        mark = marks.get(probe)
        where = f"{self.file}:{mark.line + 1}:{mark.column + 1}" if mark else self.file
        label = _dotted(path)
        self.problems.append(f"{where}: {label + ': ' if label else ''}{message}")


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_plan(path: str) -> Plan:
    """Read, validate and resolve a plan; raise PlanError listing every problem."""
    doc = _Document(path)
    data = _read_yaml(path, doc)
    if doc.problems:
        raise PlanError(doc.problems)
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, (bool, float)):  # pydantic's Literal[1] takes true and 1.0 for 1
        doc.at(("version",), f"the format version is the integer 1 (got {version!r})")
        raise PlanError(doc.problems)
    try:
        model = PlanModel.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            _report_validation_error(error, doc)
        raise PlanError(doc.problems) from None
    base = os.path.dirname(os.path.realpath(path))
    _check_references(model, doc)
    model = _resolve_check_files(model, base, doc)
    migrations = _read_all_migrations(model, base, doc)
    model = _compile_operations(model, path, migrations, doc)
    _check_environment_files(model, base, doc)
    if doc.problems:
        raise PlanError(doc.problems)
    return Plan(path=path, model=model, migrations=migrations)


def _read_yaml(path: str, doc: _Document) -> object:
    if not path.strip():
        doc.problems.append("--plan (or ROLLOUT_PLAN) is empty; name the plan file, e.g. rollout.yaml")
        return None
    if os.path.exists(path) and (problem := _unreadable(path)) is not None:
        doc.problems.append(f"{path}: cannot read the plan: {problem}")
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        doc.problems.append(f"{path}: no such file; create it, or point --plan (or ROLLOUT_PLAN) at your plan")
        return None
    except OSError as exc:
        doc.problems.append(f"{path}: cannot read the plan: {exc.strerror}")
        return None
    if len(raw) > MAX_PLAN_BYTES:
        doc.problems.append(f"{path}: the plan is larger than {MAX_PLAN_BYTES // 1024} KiB; split long SQL into files")
        return None
    if raw.startswith(BOM):
        doc.problems.append(f"{path}: starts with a UTF-8 byte-order mark; save it without one")
        return None
    try:
        text = raw.decode("utf-8")
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                doc.problems.append(f"{path}: the plan is empty; start from the example in docs/plan.md")
                return None
            _index(node, (), doc, [0])
            if doc.problems:
                return None
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except UnicodeDecodeError as exc:
        doc.problems.append(f"{path}: not UTF-8 text (byte {exc.start}); save the plan as UTF-8")
    except RecursionError:
        doc.problems.append(f"{path}: the YAML nests too deeply to read; a plan needs a few levels, not thousands")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        context = f" ({exc.context})" if exc.context else ""
        doc.problems.append(f"{where}: YAML syntax error: {exc.problem}{context}")
    except yaml.YAMLError as exc:
        doc.problems.append(f"{path}: YAML error: {exc}")
    return None


def _index(node: yaml.Node, path: Path, doc: _Document, count: list[int]) -> None:
    """Record positions; refuse duplicate keys and documents that expand beyond MAX_NODES."""
    count[0] += 1
    if count[0] > MAX_NODES:
        if count[0] == MAX_NODES + 1:
            doc.at(path, f"the plan expands to more than {MAX_NODES} values (YAML aliases?); write it out plainly")
        return
    doc.values[path] = node.start_mark
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]`: a list or a mapping as a key
                doc.values.setdefault(path + ("?",), key_node.start_mark)
                doc.at(path + ("?",), "a key must be a plain name, not a list or a mapping")
                continue
            key = key_node.value
            if key_node.tag.endswith(":bool"):  # `on:` is the key True once constructed: locate it as such
                doc.keys[path + (key.lower() in ("yes", "true", "on"),)] = key_node.start_mark
            if key in seen:
                first = seen[key]
                doc.keys[path + (key,)] = key_node.start_mark
                doc.at(path + (key,), f"duplicate key {key!r} (first at line {first.line + 1}); keep one", key=True)
                continue
            seen[key] = key_node.start_mark
            doc.keys[path + (key,)] = key_node.start_mark
            _index(value_node, path + (key,), doc, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, path + (index,), doc, count)


@lru_cache(maxsize=1)
def _schema() -> dict:
    return json_schema()


def _schema_at(path: Path) -> dict:
    """The JSON Schema node describing the value at `path` (empty when unknown)."""
    root = _schema()
    node: dict = root

    def resolve(n: dict) -> dict:
        while "$ref" in n:
            n = root["$defs"][n["$ref"].split("/")[-1]]
        for option in n.get("anyOf", []):
            option = resolve(option)
            if option.get("type") in ("object", "array"):
                return option
        return n

    for part in path:
        node = resolve(node)
        tags = node.get("discriminator", {}).get("mapping", {})
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in tags:  # the kind of a tagged union (an operation): its own schema
            node = root["$defs"][tags[part].split("/")[-1]]
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            node = node.get("additionalProperties", {})
            if not isinstance(node, dict):
                return {}
    return resolve(node)


def _report_validation_error(error: dict, doc: _Document) -> None:
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        doc.at(loc[:-1], f"missing required key {loc[-1]!r}")
    elif kind == "extra_forbidden":
        allowed = sorted(_schema_at(loc[:-1]).get("properties", {}))
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else f"allowed keys: {', '.join(allowed)}"
        doc.at(loc, f"unknown key {loc[-1]!r}; {hint}", key=True)
    elif kind == "string_pattern_mismatch":
        pattern = error.get("ctx", {}).get("pattern", "")
        rule = PATTERN_RULES.get(pattern, NAME_RULE if pattern == "" else f"the pattern {pattern}")
        doc.at(loc, f"{value!r} is not a valid name: use {rule}")
    elif kind == "value_error":
        doc.at(loc, error["msg"].removeprefix("Value error, "))
    elif isinstance(value, bool) and kind in ("string_type", "literal_error", "enum"):
        # YAML 1.1 reads an unquoted yes/no/on/off/true/false as a boolean
        key = bool(loc) and loc[-1] == "[key]"
        what, where = ("a key", loc[:-2] + (value,)) if key else ("this value", loc)  # pydantic writes True as 1
        doc.at(where, f"{what} reads as the YAML boolean {str(value).lower()} (YAML takes an unquoted yes, no, on, "
               f"off, true or false for one); quote it if you mean the word, e.g. 'on'", key=key)
    elif kind == "union_tag_invalid":
        tags = sorted(error.get("ctx", {}).get("expected_tags", "").replace("'", "").split(", "))
        tag = str(error.get("ctx", {}).get("tag"))
        guess = difflib.get_close_matches(tag, tags, n=1)
        doc.at(loc + ("op",), f"unknown operation {tag!r}; " + (f"did you mean {guess[0]!r}?" if guess else
                                                                  f"operations are: {', '.join(tags)}"))
    elif not loc:  # the whole document: maybe not a plan at all (--plan naming another file), so never quoted
        doc.at(loc, f"input should be a valid dictionary: the plan is a YAML {type(value).__name__}, not a mapping "
               "of keys (version, environments, steps, ...); is --plan naming the right file?")
    else:
        doc.at(loc, f"{error['msg'].lower()} (got {_show(value)})")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_references(model: PlanModel, doc: _Document) -> None:
    """Ids unique, dependencies known and acyclic, flags and environments declared."""
    positions: dict[str, int] = {}
    for n, gate in enumerate(model.rollout.gates):
        if gate.name in {g.name for g in model.rollout.gates[:n]}:
            doc.at(("rollout", "gates", n, "name"), f"duplicate name {gate.name!r} in gates")
    for index, step in enumerate(model.steps):
        if step.id in positions:
            doc.at(("steps", index, "id"), f"duplicate step id {step.id!r} (also steps[{positions[step.id]}]); rename one")
        else:
            positions[step.id] = index
        for kind in ("preconditions", "verify", "backfills"):
            names: set[str] = set()
            for n, item in enumerate(getattr(step, kind)):
                if item.name in names:
                    doc.at(("steps", index, kind, n, "name"), f"duplicate name {item.name!r} in {kind}")
                names.add(item.name)
        for n, dep in enumerate(step.depends_on):
            where = ("steps", index, "depends_on", n)
            if dep == step.id:
                doc.at(where, "a step cannot depend on itself")
            elif dep not in positions and dep not in {s.id for s in model.steps}:
                guess = difflib.get_close_matches(dep, [s.id for s in model.steps], n=1)
                hint = f"did you mean {guess[0]!r}?" if guess else "declare that step or remove the dependency"
                doc.at(where, f"unknown step {dep!r}; {hint}")
        if step.rollout is not None and step.flag is None:
            doc.at(("steps", index, "rollout"), "a staged rollout needs the step's 'flag:' to turn on")
        if step.rollout is not None:
            names = set()
            for n, check in enumerate(step.rollout.checks):
                if check.name in names:
                    doc.at(("steps", index, "rollout", "checks", n, "name"), f"duplicate name {check.name!r} in checks")
                names.add(check.name)
        for n, operation in enumerate(step.operations):
            for flag in operation.flags_used():  # its gates judge the stages of the step's flag
                if flag != step.flag:
                    doc.at(("steps", index, "operations", n), f"the operation asks about flag {flag!r}, but its gates "
                           f"hold the stages of the step's flag ({step.flag or 'none: give the step flag: ' + flag}); "
                           "name the step's flag")
        plan_gates = {gate.name for gate in model.rollout.gates}
        for n, gate in enumerate(step.rollout.gates if step.rollout else ()):
            where = ("the plan's rollout: gates hold for this step too" if gate.name in plan_gates else
                     "twice in this step's gates" if gate.name in {g.name for g in step.rollout.gates[:n]} else None)
            if where:
                doc.at(("steps", index, "rollout", "gates", n, "name"), f"two gates are named {gate.name!r} ({where}): "
                       "each gate's measurements are told apart by name; rename one")
        if step.flag is not None and step.flag not in model.flags:
            guess = difflib.get_close_matches(step.flag, list(model.flags), n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else "declare it under 'flags:'"
            doc.at(("steps", index, "flag"), f"unknown flag {step.flag!r}; {hint}")
    for name, env in model.environments.items():
        if env.after is not None and (env.after == name or env.after not in model.environments):
            reason = "an environment cannot come after itself" if env.after == name else f"unknown environment {env.after!r}"
            doc.at(("environments", name, "after"), reason)
            continue
        chain, upstream = [name], env.after
        while upstream is not None and upstream in model.environments and upstream not in chain:
            chain.append(upstream)
            upstream = model.environments[upstream].after
        if upstream == name and len(chain) > 1:
            doc.at(("environments", name, "after"), f"environments wait for each other: {' -> '.join(chain + [name])}")
    for name, flag in model.flags.items():
        for env in flag.environments:
            if env not in model.environments:
                doc.at(("flags", name, "environments", env), f"unknown environment {env!r}", key=True)
    _check_cycles(model, positions, doc)


def _check_cycles(model: PlanModel, positions: dict[str, int], doc: _Document) -> None:
    graph = {s.id: [d for d in s.depends_on if d in positions and d != s.id] for s in model.steps}
    state: dict[str, str] = {}
    reported: set[frozenset[str]] = set()

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "active"
        for dep in graph[node]:
            if state.get(dep) == "active":
                cycle = trail[trail.index(dep):] + [dep]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    doc.at(
                        ("steps", positions[node], "depends_on"),
                        f"dependency cycle: {' -> '.join(reversed(cycle))}; remove one of these dependencies",
                    )
            elif dep not in state:
                visit(dep, trail + [dep])
        state[node] = "done"

    for step_id in graph:
        if step_id not in state:
            visit(step_id, [step_id])


def _resolve(base: str, relative: str, where: Path, doc: _Document, *, folder: bool = False) -> str | None:
    """An absolute path inside the plan's folder, or None after recording why not."""
    full = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, full]) != base:
        doc.at(where, f"{relative!r} is outside the plan's folder {base}; keep step files beside rollout.yaml")
        return None
    if not os.path.exists(full):
        doc.at(where, f"{relative!r} does not exist (looked for {full})")
        return None
    if folder != os.path.isdir(full):
        doc.at(where, f"{relative!r} should be a {'folder' if folder else 'file'}")
        return None
    return full


def _read_text(full: str, relative: str, where: Path, doc: _Document) -> str | None:
    """A file of the plan's as text: a regular file (a FIFO or a device would block or never
    end), at most MAX_FILE_BYTES, strict UTF-8 without a byte-order mark (yoyo and PostgreSQL
    would take the mark for SQL: refused everywhere, the plan included)."""
    problem = _unreadable(full)
    if problem is not None:
        doc.at(where, f"cannot read {relative!r}: {problem}")
        return None
    with open(full, "rb") as handle:
        raw = handle.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        doc.at(where, f"{relative!r} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; split it")
        return None
    if raw.startswith(BOM):
        doc.at(where, f"{relative!r} starts with a UTF-8 byte-order mark; save it without one")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        doc.at(where, f"{relative!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
        return None
    if "\x00" in text:  # libpq ends a query at a NUL: what follows it would silently not run
        doc.at(where, f"{relative!r} holds a NUL byte (byte {raw.index(0)}); PostgreSQL would run only the SQL before "
               "it. Remove it")
        return None
    return text


def _unreadable(full: str) -> str | None:
    """Why `full` cannot be read as one of the plan's files, or None."""
    try:
        mode = os.stat(full).st_mode
    except OSError as exc:
        return exc.strerror
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, a device or a folder)"
    if not os.access(full, os.R_OK):
        return "permission denied"
    return None


def _resolve_check_files(model: PlanModel, base: str, doc: _Document) -> PlanModel:
    """Read each check's `file:` so the plan carries the SQL it will run."""
    def resolved(checks: tuple[Check, ...], where: Path) -> tuple[Check, ...]:
        out = []
        for n, check in enumerate(checks):
            if check.file is not None:
                full = _resolve(base, check.file, where + (n, "file"), doc)
                text = _read_text(full, check.file, where + (n, "file"), doc) if full else None
                if text is not None and not _holds_sql(text):
                    doc.at(where + (n, "file"), f"{check.file!r} is empty (or comments only); a check is a query "
                           "returning the violating rows")
                check = check.model_copy(update={"sql": text})
            out.append(check)
        return tuple(out)

    steps = []
    for index, step in enumerate(model.steps):
        updates: dict = {kind: resolved(getattr(step, kind), ("steps", index, kind)) for kind in ("preconditions", "verify")}
        if step.rollout is not None:
            checks = resolved(step.rollout.checks, ("steps", index, "rollout", "checks"))
            updates["rollout"] = step.rollout.model_copy(update={"checks": checks})
        steps.append(step.model_copy(update=updates))
    return model.model_copy(update={"steps": tuple(steps)})


def _check_environment_files(model: PlanModel, base: str, doc: _Document) -> None:
    for name, env in model.environments.items():
        for key in ("bootstrap", "seed"):
            relative = getattr(env, key)
            if relative is not None:
                where = ("environments", name, key)
                full = _resolve(base, relative, where, doc)
                text = _read_text(full, relative, where, doc) if full else None
                if text is not None and not _holds_sql(text):
                    doc.at(where, f"{relative!r} holds no SQL statement (it is empty, or comments only); "
                           f"write the {'schema' if key == 'bootstrap' else 'sample data'} it should create, or remove "
                           f"'{key}:'")


def _holds_sql(text: str) -> bool:
    """Whether the file has a statement (text PostgreSQL's parser cannot read is left to PostgreSQL)."""
    try:
        return bool(pglast.split(text, with_parser=True, only_slices=True))
    except pglast.parser.ParseError:
        return True


def _read_all_migrations(model: PlanModel, base: str, doc: _Document) -> dict[tuple[str, str], tuple[Migration, ...]]:
    result: dict[tuple[str, str], tuple[Migration, ...]] = {}
    owners: dict[str, str] = {}
    for index, step in enumerate(model.steps):
        for phase in ("migrate", "finalize"):
            relative = getattr(step, phase)
            if relative is None:
                continue
            where = ("steps", index, phase)
            folder = _resolve(base, relative, where, doc, folder=True)
            if folder is None:
                continue
            migrations = _read_migration_folder(base, folder, relative, where, doc)
            for migration in migrations:
                owner = f"{step.id}.{phase}"
                if migration.id in owners:
                    doc.at(where, f"migration id {migration.id!r} is also used by {owners[migration.id]}; "
                           "yoyo identifies migrations by file name, so rename one")
                owners.setdefault(migration.id, owner)
            result[(step.id, phase)] = migrations
    return result


def _read_migration_folder(base: str, folder: str, relative: str, where: Path, doc: _Document) -> tuple[Migration, ...]:
    names = sorted(os.listdir(folder))
    for name in names:
        if name.endswith(".py"):
            doc.at(where, f"{relative}/{name}: only SQL migrations are supported; rewrite it as .sql")
    # Each file held to the plan's folder and readable as text, then directives: yoyo fails on a
    # bad one with a bare KeyError, and would follow a symbolic link anywhere.
    bad_directive = False
    for name in names:
        if name.endswith(".sql"):
            full = os.path.join(folder, name)
            if _resolve(base, os.path.relpath(full, base), where, doc) is None or \
                    _read_text(full, f"{relative}/{name}", where, doc) is None:
                bad_directive = True
    if bad_directive:
        return ()
    for name in names:
        if name.endswith(".sql") and not name.endswith(".rollback.sql"):
            try:
                directives, _, _ = read_sql_migration(os.path.join(folder, name))
            except (OSError, UnicodeDecodeError) as exc:
                doc.at(where, f"cannot read {relative}/{name}: {exc}")
                bad_directive = True
                continue
            value = directives.get("transactional", "true").strip().lower()
            if value not in ("true", "false"):
                doc.at(where, f"{relative}/{name}: '-- transactional: {value}' must be true or false")
                bad_directive = True
    if bad_directive:
        return ()
    try:
        # yoyo globs the folder: a '[' in its path would be a pattern, and match nothing
        found = [m for m in topological_sort(read_migrations(glob.escape(folder))) if m.path.endswith(".sql")]
    except CycleError:
        doc.at(where, f"the '-- depends:' directives in {relative!r} form a cycle; a migration cannot wait for itself")
        return ()
    except (BadMigration, OSError, UnicodeDecodeError) as exc:
        doc.at(where, f"cannot read the migrations in {relative!r}: {exc}")
        return ()
    if not found:
        doc.at(where, f"{relative!r} holds no migrations; add NNNN_name.sql with its NNNN_name.rollback.sql")
    migrations = []
    for m in found:
        name = os.path.basename(m.path)
        rollback_path = os.path.splitext(m.path)[0] + ".rollback.sql"
        if not os.path.exists(rollback_path):
            doc.at(where, f"{relative}/{name} has no rollback file {os.path.basename(rollback_path)}; "
                   "write one (a comment alone is fine when nothing needs undoing)")
            continue
        directives, _, statements = read_sql_migration(m.path)
        _, _, rollback = read_sql_migration(rollback_path)
        transactional = directives.get("transactional", "true").strip().lower() == "true"
        text, rollback_text = _file_text(m.path), _file_text(rollback_path)
        # (a migration may act on rollback alone); yoyo counts a lone /* comment */ or ';' as a statement
        if not _holds_sql(text) and not _holds_sql(rollback_text):
            doc.at(where, f"{relative}/{name} holds no SQL statement, and neither does its rollback")
            continue
        migration = Migration(
            id=m.id,
            path=m.path,
            statements=tuple(s.strip() for s in statements),
            rollback=tuple(s.strip() for s in rollback),
            transactional=transactional,
            text=text,
            rollback_path=rollback_path,
            rollback_text=rollback_text,
        )
        for problem in _transaction_problems(migration, relative):
            doc.at(where, problem)
        migrations.append(migration)
    return tuple(migrations)


def _compile_operations(model: PlanModel, path: str, migrations: dict, doc: _Document) -> PlanModel:
    """Each step's operations compiled to migrations (after its folder's), backfills and checks:
    from here on a generated migration is like a hand-written one."""
    steps = []
    for index, step in enumerate(model.steps):
        backfills, verify, preconditions = list(step.backfills), list(step.verify), list(step.preconditions)
        gates = list(step.rollout.checks) if step.rollout else []
        for number, operation in enumerate(step.operations):
            compiled = operation.compile()
            where = operations.origin(path, index, number)
            for part_number, part in enumerate(compiled.parts, 1):
                migration = _generated(path, step.id, number, part_number, part, where)
                key = (step.id, part.phase)
                if any(m.id == migration.id for m in migrations.get(key, ())):
                    doc.at(("steps", index, "operations", number), f"migration id {migration.id!r} is also used by "
                           f"a file in {getattr(step, part.phase)}; rename the file")
                migrations[key] = migrations.get(key, ()) + (migration,)
                for problem in _transaction_problems(migration, os.path.dirname(path) or "."):
                    doc.at(("steps", index, "operations", number), problem)
                if part.restore is not None:
                    backfills.append(part.restore.model_copy(update={"restores": migration.id}))
            backfills += compiled.backfills
            verify += compiled.verify
            preconditions += compiled.preconditions
            for gate in compiled.gates:
                if gate.name in {g.name for g in gates}:
                    doc.at(("steps", index, "operations", number), f"two stage checks are named {gate.name!r} (the "
                           "step's rollout: checks and its operations' gates): each check's results are told apart "
                           "by name; rename one")
                gates.append(gate)
        _check_restores(step, index, backfills, migrations, doc)
        # a flagged step without `rollout:` takes the plan's stages, and its operations' gates still hold there
        staged = step.rollout or (StagedRollout() if step.flag and gates else None)
        rollout = staged.model_copy(update={"checks": tuple(gates)}) if staged else None
        steps.append(step.model_copy(update={"backfills": tuple(backfills), "verify": tuple(verify),
                                             "preconditions": tuple(preconditions), "rollout": rollout})
                     if step.operations else step)
    return model.model_copy(update={"steps": tuple(steps)})


def _check_restores(step, index: int, backfills: list, migrations: dict, doc: _Document) -> None:
    """A job that `restores` runs before a migration's rollback: that migration must be the step's."""
    ids = [m.id for phase in ("migrate", "finalize") for m in migrations.get((step.id, phase), ())]
    for n, job in enumerate(step.backfills):
        if job.restores is not None and job.restores not in ids:
            guess = difflib.get_close_matches(job.restores, ids, n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else f"the step's migrations are: {', '.join(ids) or 'none'}"
            doc.at(("steps", index, "backfills", n, "restores"), f"no migration {job.restores!r} in step "
                   f"{step.id!r}; {hint}")
    seen: set[str] = set()
    for job in backfills[len(step.backfills):]:  # what operations brought: names must not clash with the plan's
        if job.name in seen or any(b.name == job.name for b in step.backfills):
            doc.at(("steps", index, "operations"), f"two backfills of step {step.id!r} are named {job.name!r}; "
                   "rename the plan's own backfill")
        seen.add(job.name)


def _generated(path: str, step_id: str, number: int, part_number: int, part, where: str) -> Migration:
    """The migration of one part of an operation: its id is stable (yoyo records it by id)."""
    migration_id = f"{step_id}__op{number + 1:02d}_{part_number:02d}_{part.name}"
    virtual = os.path.join(os.path.dirname(os.path.abspath(path)), f"{migration_id}.sql")
    text = operations.generated_text(part.apply, origin=where, transactional=part.transactional)
    rollback = operations.generated_text(part.rollback, origin=where, transactional=part.transactional)
    return Migration(
        id=migration_id, path=virtual, statements=tuple(operations.render(s) for s in part.apply),
        rollback=tuple(operations.render(s) for s in part.rollback), transactional=part.transactional, text=text,
        rollback_path=virtual.removesuffix(".sql") + ".rollback.sql", rollback_text=rollback, origin=where,
        allows=part.allows)


def _file_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _transaction_problems(migration: Migration, folder: str) -> list[str]:
    """What the file's statements say about transactions, checked against its directive before
    anything runs: a statement PostgreSQL refuses inside a transaction block needs `--
    transactional: false`, and no migration may open or end transactions of its own (rollout
    commits each migration with its bookkeeping)."""
    problems = []
    for direction in Direction:
        path, text = migration.source(direction)
        where = f"{folder}/{os.path.basename(path)}"
        for effect in analyze(text):
            head = effect.sql.split("\n")[0][:60]
            if effect.controls_transaction:
                problems.append(f"{where}:{effect.line}: {head!r} manages the transaction itself; rollout runs each "
                                "migration in one transaction with its bookkeeping. Remove it, or split the file and "
                                "mark one '-- transactional: false' if it must run outside a transaction")
            elif migration.transactional and not effect.transactional:
                problems.append(f"{where}:{effect.line}: {effect.kind} cannot run inside a transaction block, and "
                                f"{os.path.basename(migration.path)} runs in one. Put it in a migration of its own "
                                "whose first line is '-- transactional: false' (with IF NOT EXISTS / IF EXISTS, so a "
                                "re-run after a crash completes it)")
    return problems
