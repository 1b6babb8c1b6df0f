"""Flag evaluation for applications: a cached snapshot, and an OpenFeature provider over it.

    from orchestrator.client import FlagClient
    flags = FlagClient(os.environ["DATABASE_URL"], refresh_seconds=15)
    if flags.is_enabled("messages_write", guild_id): ...

One query fetches every flag of the environment with the subjects it targets; `is_enabled`
then reads the in-memory snapshot only, never the database. A background thread refreshes the snapshot every
`refresh_seconds` (and `refresh()` does it on demand), so `rollout flags set NAME off`
reaches the application within one interval. When a refresh fails, the last snapshot is
kept and `last_error` says why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import MappingProxyType

import psycopg
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider
from openfeature.provider.metadata import Metadata

from . import flags

# one query for the whole snapshot, a row a flag, its targets as jsonb ({subject: included})
_SNAPSHOT_OF = ("SELECT f.name, f.enabled, f.percent, {} FROM rollout.flags AS f "
                "WHERE f.env = coalesce(%s, (SELECT value #>> '{{}}' FROM rollout.meta WHERE key = 'environment'))")
_SNAPSHOT = _SNAPSHOT_OF.format("coalesce((SELECT jsonb_object_agg(t.subject, t.included) FROM rollout.flag_targets "
                                "AS t WHERE t.env = f.env AND t.name = f.name), '{}')")
_SNAPSHOT_UNTARGETED = _SNAPSHOT_OF.format("'{}'::jsonb")  # a rollout schema from before targeting


class FlagClient:
    """A cached snapshot of one environment's flags."""

    def __init__(self, conninfo: str, *, env: str | None = None, refresh_seconds: float = 15.0,
                 background: bool = True):
        self._conninfo, self._env, self.refresh_seconds = conninfo, env, refresh_seconds
        self._snapshot: Mapping[str, tuple[bool, int, Mapping[str, bool]]] = MappingProxyType({})
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.last_error: str | None = None
        self.refreshed_at: float | None = None
        self.refresh()
        self._thread = threading.Thread(target=self._refresh_forever, daemon=True) if background else None
        if self._thread:
            self._thread.start()

    def is_enabled(self, name: str, subject: object) -> bool:
        """Whether `subject` sees flag `name`: from the snapshot, with no query. Unknown flags are off."""
        return self.resolve(name, subject)[0]

    def resolve(self, name: str, subject: object) -> tuple[bool, str]:
        """`subject`'s answer for flag `name` and why (flags.DISABLED, TARGETING_MATCH, STATIC,
        SPLIT); an unknown flag is off, DISABLED."""
        value = self._snapshot.get(name)
        if value is None:
            return False, flags.DISABLED
        enabled, percent, targets = value
        return flags.resolve(name, enabled, percent, subject, targets)

    def value(self, name: str) -> tuple[bool, int] | None:
        """(enabled, percent) of a flag in the snapshot, None when the environment lacks it."""
        value = self._snapshot.get(name)
        return value[:2] if value is not None else None

    def snapshot(self) -> Mapping[str, tuple[bool, int, Mapping[str, bool]]]:
        """Every flag: (enabled, percent, targets), as one consistent, immutable picture."""
        return self._snapshot

    def refresh(self) -> None:
        """Fetch every flag in one query and swap the snapshot in whole."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    # no prepared statements: an application may reach its database through a
                    # transaction-mode pooler (Supabase's port 6543), which would mix them up
                    self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5,
                                                 application_name="rollout flag client", prepare_threshold=None)
                try:
                    rows = self._conn.execute(_SNAPSHOT, (self._env,)).fetchall()
                except psycopg.errors.UndefinedTable:
                    rows = self._conn.execute(_SNAPSHOT_UNTARGETED, (self._env,)).fetchall()
            except psycopg.Error as exc:
                self.last_error = " ".join(str(exc).split()) or type(exc).__name__
                return
            self._snapshot = MappingProxyType({name: (enabled, percent, MappingProxyType(targets))
                                               for name, enabled, percent, targets in rows})
            self.last_error, self.refreshed_at = None, time.monotonic()

    def _refresh_forever(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def __enter__(self) -> "FlagClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RolloutProvider(AbstractProvider):
    """An OpenFeature provider over a FlagClient: boolean flags, the subject as targeting key."""

    def __init__(self, client: FlagClient):
        super().__init__()
        self.client = client

    def get_metadata(self) -> Metadata:
        return Metadata(name="rollout")

    def shutdown(self) -> None:
        self.client.close()

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        value = self.client.value(flag_key)
        if value is None:
            return FlagResolutionDetails(default_value, ErrorCode.FLAG_NOT_FOUND,
                                         f"no flag {flag_key!r} in this environment", Reason.ERROR)
        subject = evaluation_context.targeting_key if evaluation_context else None
        on, why = self.client.resolve(flag_key, subject)
        if why == flags.SPLIT and subject is None:
            return FlagResolutionDetails(default_value, ErrorCode.TARGETING_KEY_MISSING,
                                         "a percentage rollout needs the subject id as targeting_key", Reason.ERROR)
        return FlagResolutionDetails(on, reason=Reason(why), variant="on" if on else "off")

    def _type_mismatch(self, default_value):
        return FlagResolutionDetails(default_value, ErrorCode.TYPE_MISMATCH, "rollout flags are boolean", Reason.ERROR)

    def resolve_string_details(self, flag_key, default_value, evaluation_context=None):
        return self._type_mismatch(default_value)

    def resolve_integer_details(self, flag_key, default_value, evaluation_context=None):
        return self._type_mismatch(default_value)

    def resolve_float_details(self, flag_key, default_value, evaluation_context=None):
        return self._type_mismatch(default_value)

    def resolve_object_details(self, flag_key, default_value, evaluation_context=None):
        return self._type_mismatch(default_value)
