"""The orchestrator's own state, in a `rollout` schema of the target database.

Step states move only along TRANSITIONS; the database enforces the same table with a trigger,
so a hand-written UPDATE cannot put a step in an impossible state either. Runs record who holds
an environment (one unfinished run per environment, by a partial unique index); events are
the append-only audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .errors import RolloutError

SCHEMA_VERSION = 11  # 5: rollout.backfills.waiting; 6: rollout.steps.halted; 7: rollout.flag_targets; 8: is_enabled SECURITY DEFINER; 9: flag_changed_at; 10: replaced_functions; 11: replaced_functions.migration and routine. Guards are installed by _intact()

PENDING = "pending"
MIGRATING = "migrating"
MIGRATED = "migrated"
VERIFIED = "verified"
ROLLING_OUT = "rolling_out"
ABORTED = "aborted"
FINALIZING = "finalizing"
DONE = "done"
FAILED = "failed"
ROLLING_BACK = "rolling_back"

# Every allowed move of a step. A flagged step waits in rolling_out while `rollout advance`
# takes its flag through its stages; `rollout abort` turns the flag off and parks it in
# aborted. In-progress states (migrating, finalizing, rolling_back) are
# where an interrupted command left a step; the next command continues them.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({MIGRATING}),
    MIGRATING: frozenset({MIGRATED, FAILED, ROLLING_BACK}),
    MIGRATED: frozenset({VERIFIED, FAILED, ROLLING_BACK}),
    VERIFIED: frozenset({ROLLING_OUT, FINALIZING, DONE, ROLLING_BACK}),
    ROLLING_OUT: frozenset({FINALIZING, DONE, ABORTED, ROLLING_BACK}),
    ABORTED: frozenset({ROLLING_OUT, ROLLING_BACK}),
    FINALIZING: frozenset({DONE, FAILED, ROLLING_BACK}),
    DONE: frozenset({ROLLING_BACK}),
    FAILED: frozenset({MIGRATING, FINALIZING, ROLLING_BACK}),
    ROLLING_BACK: frozenset({PENDING, FAILED}),
}

_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS rollout;
CREATE TABLE IF NOT EXISTS rollout.meta (
    key text PRIMARY KEY,
    value jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS rollout.transitions (
    from_state text NOT NULL,
    to_state text NOT NULL,
    PRIMARY KEY (from_state, to_state)
);
CREATE TABLE IF NOT EXISTS rollout.steps (
    env text NOT NULL,
    step_id text NOT NULL,
    state text NOT NULL,
    phase text,
    error text,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_by text NOT NULL,
    PRIMARY KEY (env, step_id)
);
CREATE TABLE IF NOT EXISTS rollout.runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    env text NOT NULL,
    command text NOT NULL,
    actor text NOT NULL,
    backend_pid integer NOT NULL DEFAULT pg_backend_pid(),
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    outcome text
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_active_per_env ON rollout.runs (env) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS rollout.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    env text NOT NULL,
    run_id bigint REFERENCES rollout.runs (id),
    actor text NOT NULL,
    step_id text,
    kind text NOT NULL,
    from_state text,
    to_state text,
    ok boolean NOT NULL DEFAULT true,
    message text NOT NULL,
    detail jsonb
);
CREATE INDEX IF NOT EXISTS events_env_at ON rollout.events (env, at);
-- A backfill's checkpoint: updated in the same transaction as each batch it records.
CREATE TABLE IF NOT EXISTS rollout.backfills (
    env text NOT NULL,
    step_id text NOT NULL,
    name text NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'paused', 'cancelled', 'done', 'failed')),
    requested text CHECK (requested IN ('pause', 'cancel')),
    cursor jsonb,
    rows_covered bigint NOT NULL DEFAULT 0,
    rows_changed bigint NOT NULL DEFAULT 0,
    rows_failed bigint NOT NULL DEFAULT 0,
    batches integer NOT NULL DEFAULT 0,
    batch_size integer,
    active_seconds double precision NOT NULL DEFAULT 0,
    error text,
    started_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    PRIMARY KEY (env, step_id, name)
);
ALTER TABLE rollout.backfills ADD COLUMN IF NOT EXISTS waiting text;
ALTER TABLE rollout.steps ADD COLUMN IF NOT EXISTS stage integer;
ALTER TABLE rollout.steps ADD COLUMN IF NOT EXISTS stage_since timestamptz;
ALTER TABLE rollout.steps ADD COLUMN IF NOT EXISTS halted text;

-- Feature flags: this database's values, per environment. A subject is in when its bucket
-- (0..9999, from sha256 of "flag:subject") is below percent * 100, so a subject that is in
-- at 10% stays in at 50%. The Python client computes the same bucket (orchestrator.flags).
CREATE TABLE IF NOT EXISTS rollout.flags (
    env text NOT NULL,
    name text NOT NULL,
    enabled boolean NOT NULL,
    percent smallint NOT NULL CHECK (percent BETWEEN 0 AND 100),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_by text NOT NULL,
    PRIMARY KEY (env, name)
);
CREATE TABLE IF NOT EXISTS rollout.flag_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    env text NOT NULL,
    name text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor text NOT NULL,
    old_enabled boolean,
    old_percent smallint,
    new_enabled boolean NOT NULL,
    new_percent smallint NOT NULL,
    reason text
);
ALTER TABLE rollout.flag_history ADD COLUMN IF NOT EXISTS targets jsonb;  -- a targeting change: what moved
-- Subjects a flag always includes or always excludes here, ahead of its percentage (never
-- ahead of off: the kill switch turns a flag off for everyone). `declared`: named by the plan,
-- which keeps them in step; the others were added with `rollout flags target`.
CREATE TABLE IF NOT EXISTS rollout.flag_targets (
    env text NOT NULL,
    name text NOT NULL,
    subject text NOT NULL,
    included boolean NOT NULL,
    declared boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_by text NOT NULL,
    PRIMARY KEY (env, name, subject)
);
CREATE OR REPLACE FUNCTION rollout.bucket(flag text, subject text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (('x' || lpad(left(encode(sha256(convert_to(flag || ':' || subject, 'UTF8')), 'hex'), 8), 16, '0'))
            ::bit(64)::bigint % 10000)::integer
$$;
-- SECURITY DEFINER with a fixed search_path: any role may evaluate a flag (the plan's triggers do,
-- as whoever writes) even where rollout's tables are private (flags_api), and none can redirect a name.
CREATE OR REPLACE FUNCTION rollout.is_enabled(flag text, subject text, environment text DEFAULT NULL)
RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((
        SELECT f.enabled AND f.percent > 0 AND coalesce(
            (SELECT t.included FROM rollout.flag_targets AS t  -- one probe of its primary key
             WHERE t.env = f.env AND t.name = f.name AND t.subject = is_enabled.subject),
            f.percent >= 100 OR rollout.bucket(flag, subject) < f.percent * 100)
        FROM rollout.flags AS f
        WHERE f.name = flag
          AND f.env = coalesce(environment, (SELECT value #>> '{}' FROM rollout.meta WHERE key = 'environment'))
    ), false)
$$;

-- Definitions a plan's `sql` operation replaced (CREATE OR REPLACE FUNCTION without `down`): the
-- migration keeps the one it replaces (NULL: the function was new) under its own id, in its own
-- transaction. Its rollback puts that definition back (or drops the function); if a later
-- replacement is still in place, that one now replaces the kept definition instead, as if this
-- migration had never run. The operator's alone.
CREATE TABLE IF NOT EXISTS rollout.replaced_functions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    signature text NOT NULL,
    definition text,
    replaced_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE rollout.replaced_functions ADD COLUMN IF NOT EXISTS migration text;  -- the migration that replaced it
ALTER TABLE rollout.replaced_functions ADD COLUMN IF NOT EXISTS routine text;  -- the signature, schema-qualified
CREATE OR REPLACE FUNCTION rollout.routine_named(signature text) RETURNS text LANGUAGE sql STABLE AS $$
    -- an unqualified name is created in current_schema(), whatever search_path finds elsewhere
    SELECT CASE WHEN array_length(parse_ident(split_part(signature, '(', 1)), 1) = 1
                THEN format('%I.%s', current_schema(), signature) ELSE signature END
$$;
CREATE OR REPLACE FUNCTION rollout.keep_function(signature text) RETURNS void LANGUAGE sql AS $$
    INSERT INTO rollout.replaced_functions (signature, routine, migration, definition)
    SELECT signature, r.routine, nullif(current_setting('rollout.migration', true), ''),
           pg_get_functiondef(to_regprocedure(r.routine))
      FROM (SELECT rollout.routine_named(signature) AS routine) AS r
$$;
CREATE OR REPLACE FUNCTION rollout.put_back_function(signature text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    kept rollout.replaced_functions;
    target text;
    later bigint;
    routine text;
    owner text;
    acl aclitem[];
    note text;
    privilege record;
BEGIN
    -- what this migration kept (kept before rollout recorded migrations: the latest of those)
    SELECT * INTO kept FROM rollout.replaced_functions AS r
     WHERE r.signature = put_back_function.signature
       AND (r.migration = current_setting('rollout.migration', true) OR r.migration IS NULL)
     ORDER BY r.migration IS NULL, r.id DESC LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rollout kept no definition of % to put back', signature
            USING HINT = 'the migration was applied before rollout kept definitions (its `down` was removed later), or '
                         'rollout.replaced_functions was emptied by hand: restore the function from a backup';
    END IF;
    DELETE FROM rollout.replaced_functions AS r WHERE r.id = kept.id;
    target := coalesce(kept.routine, rollout.routine_named(kept.signature));
    -- the same function however its signature was spelt (int4 or integer), or by name once dropped
    SELECT min(r.id) INTO later FROM rollout.replaced_functions AS r,
           LATERAL (SELECT coalesce(r.routine, rollout.routine_named(r.signature)) AS named) AS n
     WHERE r.id > kept.id AND (n.named = target OR to_regprocedure(n.named) = to_regprocedure(target));
    IF later IS NOT NULL THEN  -- a later replacement stays: it now replaces what this one replaced
        UPDATE rollout.replaced_functions AS r SET definition = kept.definition WHERE r.id = later;
    ELSIF kept.definition IS NULL THEN  -- it was new: the rollback drops it (gone already: nothing to do)
        IF to_regprocedure(target) IS NOT NULL THEN
            EXECUTE 'DROP ROUTINE ' || to_regprocedure(target)::text;
        END IF;
    ELSE
        BEGIN
            EXECUTE kept.definition;
        EXCEPTION WHEN invalid_function_definition THEN
            routine := to_regprocedure(target)::text;
            IF routine IS NULL THEN
                RAISE;
            END IF;
            -- OR REPLACE cannot take parameter defaults away or change the result type: drop it
            -- first (a view or trigger that uses it fails the drop with its name), then give the
            -- definition back its owner, grants and comment, which pg_get_functiondef leaves out
            SELECT p.proowner::regrole::text, p.proacl, obj_description(p.oid, 'pg_proc') INTO owner, acl, note
              FROM pg_proc AS p WHERE p.oid = routine::regprocedure;
            EXECUTE 'DROP ROUTINE ' || routine;
            EXECUTE kept.definition;
            EXECUTE format('ALTER ROUTINE %s OWNER TO %s', routine, owner);
            IF acl IS NOT NULL THEN
                EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', routine);
                FOR privilege IN SELECT a.privilege_type, a.grantee, a.is_grantable FROM aclexplode(acl) AS a LOOP
                    EXECUTE format('GRANT %s ON ROUTINE %s TO %s%s', privilege.privilege_type, routine,
                                   CASE WHEN privilege.grantee = 0 THEN 'PUBLIC'
                                        ELSE quote_ident(pg_get_userbyid(privilege.grantee)) END,
                                   CASE WHEN privilege.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
                END LOOP;
            END IF;
            EXECUTE format('COMMENT ON ROUTINE %s IS %L', routine, note);
        END;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION rollout.keep_function(text), rollout.put_back_function(text), rollout.routine_named(text)
    FROM PUBLIC;

-- When a flag's answers last changed here (a stage, the kill switch, a target): a stage check
-- judges the rows written since, when every subject the flag names was already on the new shape.
CREATE OR REPLACE FUNCTION rollout.flag_changed_at(flag text, environment text DEFAULT NULL)
RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(h.at) FROM rollout.flag_history AS h
    WHERE h.name = flag
      AND h.env = coalesce(environment, (SELECT value #>> '{}' FROM rollout.meta WHERE key = 'environment'))
$$;

-- Least privilege: every role (the application's too) may read the state and evaluate
-- flags; only the owner, the operator's role that runs rollout, may change anything.
REVOKE ALL ON ALL TABLES IN SCHEMA rollout FROM PUBLIC;
GRANT USAGE ON SCHEMA rollout TO PUBLIC;
GRANT SELECT ON rollout.meta, rollout.steps, rollout.transitions, rollout.runs, rollout.events, rollout.flags,
    rollout.flag_history, rollout.flag_targets TO PUBLIC;
GRANT EXECUTE ON FUNCTION rollout.bucket(text, text), rollout.is_enabled(text, text, text) TO PUBLIC;

-- Rows a backfill with on_error: record could not convert, with PostgreSQL's reason.
CREATE TABLE IF NOT EXISTS rollout.backfill_errors (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    env text NOT NULL,
    step_id text NOT NULL,
    name text NOT NULL,
    key jsonb NOT NULL,
    error text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION rollout.enforce_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.state <> 'pending' AND NOT EXISTS (
        SELECT 1 FROM rollout.transitions WHERE from_state = 'pending' AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'step % cannot start in state %', NEW.step_id, NEW.state;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.state IS DISTINCT FROM OLD.state AND NOT EXISTS (
        SELECT 1 FROM rollout.transitions WHERE from_state = OLD.state AND to_state = NEW.state) THEN
        RAISE EXCEPTION 'step % cannot move from % to %', NEW.step_id, OLD.state, NEW.state;
    END IF;
    -- The stage decides what advance and the contract do next: only rollout moves it.
    IF TG_OP = 'UPDATE' AND NEW.stage IS DISTINCT FROM OLD.stage
       AND current_setting('rollout.writer', true) IS DISTINCT FROM 'rollout' THEN
        RAISE EXCEPTION 'the stage of step % is moved by rollout advance only', NEW.step_id
            USING HINT = 'set the flag with rollout flags set, or roll the step back';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS steps_enforce_transition ON rollout.steps;
CREATE TRIGGER steps_enforce_transition BEFORE INSERT OR UPDATE ON rollout.steps
    FOR EACH ROW EXECUTE FUNCTION rollout.enforce_transition();

CREATE OR REPLACE FUNCTION rollout.events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rollout.events is an append-only audit trail';
END $$;
DROP TRIGGER IF EXISTS events_append_only ON rollout.events;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON rollout.events
    FOR EACH ROW EXECUTE FUNCTION rollout.events_append_only();
DROP TRIGGER IF EXISTS events_no_truncate ON rollout.events;
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON rollout.events
    FOR EACH STATEMENT EXECUTE FUNCTION rollout.events_append_only();
GRANT SELECT ON rollout.backfills, rollout.backfill_errors TO PUBLIC;
"""


class InvalidTransition(RolloutError):
    """A move the state machine forbids: a bug, or a state changed by hand."""


def checked_state(current: "StepState") -> "StepState":
    """The step's record, refused when its state is none of the state machine's (a hand edit by a
    role that could disable the guard trigger): no command may act on a state it does not know."""
    if current.state not in TRANSITIONS:
        raise InvalidTransition(
            f"step {current.step_id!r} records the state {current.state!r}, which is not one of rollout's: "
            f"rollout.steps was edited by hand. Put back the state its last transition names (`rollout events` shows "
            f"it), as the superuser who edited it, then run the command again")
    return current


def checked_stage(step_id: str, current: "StepState", stage_count: int) -> int | None:
    """The step's recorded rollout stage, refused when it is not one of its rollout's stages
    (a hand edit by a role that could disable the guard trigger): advance would otherwise run
    the contract, or status fail, on a stage that does not exist."""
    if current.stage is None or 0 <= current.stage < stage_count:
        return current.stage
    raise InvalidTransition(
        f"step {step_id!r} records stage {current.stage + 1} of a rollout with {stage_count} stages: its state "
        f"was edited by hand. Park it with `rollout abort {step_id}` (the flag goes off), then `rollout advance "
        f"{step_id}` starts the rollout again from its first stage")


@dataclass(frozen=True)
class StepState:
    step_id: str
    state: str = PENDING
    phase: str | None = None
    error: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    stage: int | None = None  # index into the step's rollout stages while rolling out
    stage_since: datetime | None = None
    halted: str | None = None  # why a gate stopped the rollout; an operator's `advance STEP` clears it


@dataclass(frozen=True)
class Event:
    at: datetime
    env: str
    actor: str
    kind: str
    message: str
    ok: bool = True
    step_id: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    detail: dict | None = None
    id: int | None = None  # its row in rollout.events, once written

    def as_json(self) -> dict:
        return {**self.__dict__, "at": self.at.isoformat()}


class States(dict):
    """Step states by id; a step without a row yet is pending."""

    def __missing__(self, step_id: str) -> StepState:
        return StepState(step_id)


def schema_exists(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('rollout.steps') IS NOT NULL").fetchone()[0]


_TABLES = ("meta", "transitions", "steps", "runs", "events", "backfills", "flags", "flag_history", "backfill_errors",
           "flag_targets", "replaced_functions")


def _missing_tables(conn: psycopg.Connection) -> list[str]:
    present = conn.execute("SELECT coalesce(array_agg(t), '{}') FROM unnest(%s::text[]) AS t "
                           "WHERE to_regclass('rollout.' || t) IS NOT NULL", (list(_TABLES),)).fetchone()[0]
    return [t for t in _TABLES if t not in present]


def _schema_version(conn: psycopg.Connection) -> int | None:
    """The version rollout.meta records (None when it records none), refused when it is not a number."""
    row = conn.execute("SELECT value FROM rollout.meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        return None
    if not isinstance(row[0], int) or isinstance(row[0], bool):
        raise InvalidTransition(
            f"rollout.meta records the schema version {row[0]!r}, not a version number: it was edited by hand. "
            f"Put back the version: UPDATE rollout.meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version' "
            "(the next command checks the schema and completes it)")
    return row[0]


def _recorded(conn: psycopg.Connection) -> tuple[list[str], int | None]:
    """The state schema's missing tables, and the version rollout.meta records (None without one)."""
    missing = _missing_tables(conn)
    return missing, (_schema_version(conn) if "meta" not in missing else None)


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create or check the state schema. Call with the environment lock held."""
    if schema_exists(conn):
        missing, version = _recorded(conn)
        if version is not None and version > SCHEMA_VERSION:
            raise RolloutError(
                f"this database's rollout schema is version {version}, newer than this rollout "
                f"({SCHEMA_VERSION}); upgrade rollout")
        if "flags" in missing and (version is None or version == SCHEMA_VERSION):
            # recreated, it would hold the plan's defaults: a done step's flag could go off under the application
            raise InvalidTransition(
                "rollout.flags is missing from this database's rollout schema (dropped by hand): the flags' values "
                "here are lost, and rollout will not guess them. Restore the rollout schema from a backup "
                "(pg_dump --schema=rollout), then run the command again")
        if version == SCHEMA_VERSION and not missing and _intact(conn):
            return  # older versions, and a schema changed by hand, re-run the DDL below: it is idempotent
    with conn.transaction():
        conn.execute(_SCHEMA_SQL)
        conn.execute("DELETE FROM rollout.transitions")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO rollout.transitions (from_state, to_state) VALUES (%s, %s)",
                [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)],
            )
        set_meta(conn, "schema_version", SCHEMA_VERSION)


_TRIGGERS = ("steps_enforce_transition", "events_append_only", "events_no_truncate")


def _intact(conn: psycopg.Connection) -> bool:
    """Whether the rules the database enforces are all there: a hand-emptied transitions table
    or a dropped trigger would let anything through (or stop everything)."""
    moves, triggers = conn.execute(
        "SELECT (SELECT count(*) FROM rollout.transitions), (SELECT count(*) FROM pg_trigger WHERE tgname = ANY (%s) "
        "AND tgrelid IN ('rollout.steps'::regclass, 'rollout.events'::regclass) AND tgenabled <> 'D')",
        (list(_TRIGGERS),)).fetchone()
    return moves == sum(len(t) for t in TRANSITIONS.values()) and triggers == len(_TRIGGERS)


def schema_older(conn: psycopg.Connection) -> bool:
    """Whether the state schema is an older version this rollout upgrades."""
    version = _recorded(conn)[1]
    return version is not None and version < SCHEMA_VERSION


def ensure_schema_current(conn: psycopg.Connection) -> None:
    """For commands that run without the environment lock: refuse an out-of-date or incomplete state schema."""
    missing, version = _recorded(conn)
    if version == SCHEMA_VERSION and missing:
        raise RolloutError(f"this database's rollout schema lacks {', '.join('rollout.' + t for t in missing)} (dropped "
                           "by hand); run a command that takes the lock (`rollout apply`): it puts back what it can, and "
                           "says what it cannot")
    if version != SCHEMA_VERSION:
        raise RolloutError(f"this database's rollout schema is version {version if version is not None else '?'}, "
                           f"this rollout expects {SCHEMA_VERSION}; run any command that takes the lock (`rollout "
                           "apply`) to upgrade it")


def get_meta(conn: psycopg.Connection, key: str) -> object | None:
    row = conn.execute("SELECT value FROM rollout.meta WHERE key = %s", (key,)).fetchone()
    return row[0] if row else None


def set_meta(conn: psycopg.Connection, key: str, value: object) -> None:
    conn.execute(
        "INSERT INTO rollout.meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (key, Jsonb(value)),
    )


def step_states(conn: psycopg.Connection, env: str) -> States:
    if not schema_exists(conn):
        return States()
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT step_id, state, phase, error, updated_at, updated_by, stage, stage_since, halted "
            "FROM rollout.steps WHERE env = %s", (env,)
        ).fetchall()
    return States({row["step_id"]: StepState(**row) for row in rows})


def check_transition(step_id: str, current: str, new: str) -> None:
    checked_state(StepState(step_id, current))
    if new not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        raise InvalidTransition(f"step {step_id!r} cannot move from {current} to {new} (from {current}: {allowed})")


def write_state(conn: psycopg.Connection, env: str, step_id: str, state: str, actor: str,
                phase: str | None = None, error: str | None = None) -> None:
    """Update the step's row, or create it on the step's first move (under the environment lock).

    Not INSERT ... ON CONFLICT: its BEFORE INSERT trigger would judge the move from 'pending'.
    """
    values = {"env": env, "step": step_id, "state": state, "phase": phase, "error": error, "actor": actor}
    updated = conn.execute(
        """
        UPDATE rollout.steps SET state = %(state)s, phase = %(phase)s, error = %(error)s,
               updated_by = %(actor)s, updated_at = clock_timestamp()
        WHERE env = %(env)s AND step_id = %(step)s
        """,
        values,
    ).rowcount
    if not updated:
        conn.execute(
            """
            INSERT INTO rollout.steps (env, step_id, state, phase, error, updated_by)
            VALUES (%(env)s, %(step)s, %(state)s, %(phase)s, %(error)s, %(actor)s)
            """,
            values,
        )


def set_stage(conn: psycopg.Connection, env: str, step_id: str, stage: int | None) -> None:
    """Move a step's rollout stage: the transition trigger lets only rollout's own writes do it."""
    with conn.transaction():
        conn.execute("SELECT set_config('rollout.writer', 'rollout', true)")
        conn.execute("UPDATE rollout.steps SET stage = %s, stage_since = clock_timestamp() "
                     "WHERE env = %s AND step_id = %s", (stage, env, step_id))


def set_halted(conn: psycopg.Connection, env: str, step_id: str, reason: str | None) -> None:
    """Mark a rollout halted by a gate (reason), or clear the mark (None)."""
    conn.execute("UPDATE rollout.steps SET halted = %s WHERE env = %s AND step_id = %s", (reason, env, step_id))


def insert_event(conn: psycopg.Connection, run_id: int | None, event: Event) -> Event:
    at = conn.execute(
        """
        INSERT INTO rollout.events (env, run_id, actor, step_id, kind, from_state, to_state, ok, message, detail)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id, at
        """,
        (event.env, run_id, event.actor, event.step_id, event.kind, event.from_state, event.to_state,
         event.ok, event.message, Jsonb(event.detail) if event.detail is not None else None),
    ).fetchone()
    return Event(**{**event.__dict__, "id": at[0], "at": at[1]})


def read_events(conn: psycopg.Connection, env: str, limit: int) -> list[Event]:
    if not schema_exists(conn):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            SELECT at, env, actor, kind, message, ok, step_id, from_state, to_state, detail
            FROM (SELECT * FROM rollout.events WHERE env = %s ORDER BY id DESC LIMIT %s) AS latest
            ORDER BY id
            """,
            (env, limit),
        ).fetchall()
    return [Event(**row) for row in rows]


def begin_run(conn: psycopg.Connection, env: str, command: str, actor: str) -> tuple[int, list[dict]]:
    """Open a run; first close runs a killed process left open (we hold the lock, so they are dead)."""
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            stale = cur.execute(
                """
                UPDATE rollout.runs SET finished_at = clock_timestamp(), outcome = 'interrupted'
                WHERE env = %s AND finished_at IS NULL
                RETURNING id, command, actor, started_at
                """,
                (env,),
            ).fetchall()
        run_id = conn.execute(
            "INSERT INTO rollout.runs (env, command, actor) VALUES (%s, %s, %s) RETURNING id", (env, command, actor)
        ).fetchone()[0]
    return run_id, stale


def finish_run(conn: psycopg.Connection, run_id: int, outcome: str) -> None:
    conn.execute("UPDATE rollout.runs SET finished_at = clock_timestamp(), outcome = %s WHERE id = %s", (outcome, run_id))
