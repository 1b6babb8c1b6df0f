"""What `rollout flags serve` shows Prometheus at /metrics: each flag's value from the served
snapshot, each step's state and stage and each backfill's progress read from the environment
at scrape time (one query each, never per evaluation), and the evaluations served."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .database import Target, connect
from .errors import RolloutError
from .ofrep import Snapshot

_STEPS = "SELECT step_id, state, stage, halted IS NOT NULL FROM rollout.steps WHERE env = %s ORDER BY step_id"
_BACKFILLS = ("SELECT step_id, name, state, rows_covered, rows_changed, active_seconds FROM rollout.backfills "
              "WHERE env = %s ORDER BY step_id, name")


class RolloutCollector(Collector):
    """Flags from the snapshot; steps and backfills from the database when it answers."""

    def __init__(self, target: Target, snapshot: Callable[[], Snapshot], stages: Callable[[str], list[int] | None]):
        self.target, self.snapshot, self.stages = target, snapshot, stages
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        enabled = GaugeMetricFamily("rollout_flag_enabled", "1 when the flag is on for some subjects", labels=["flag"])
        percent = GaugeMetricFamily("rollout_flag_percent", "the flag's percentage (0 when off)", labels=["flag"])
        targeted = GaugeMetricFamily("rollout_flag_targets", "subjects the flag always includes or excludes",
                                     labels=["flag", "target"])
        for name, (on, pct, targets) in sorted(self.snapshot().items()):
            enabled.add_metric([name], 1.0 if on else 0.0)
            percent.add_metric([name], float(pct if on else 0))
            inside = sum(targets.values())
            targeted.add_metric([name, "include"], float(inside))
            targeted.add_metric([name, "exclude"], float(len(targets) - inside))
        yield from (enabled, percent, targeted)
        yield from self._from_database()

    def _from_database(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("rollout_database_up", "1 when the environment's database answered this scrape")
        try:
            steps, backfills = self._read()
        except (psycopg.Error, RolloutError):  # the database is down: the flags are still served
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        state = GaugeMetricFamily("rollout_step_state", "1 for the step's current state", labels=["step", "state"])
        stage = GaugeMetricFamily("rollout_step_stage_percent", "the percentage of the stage a rollout is at",
                                  labels=["step"])
        halted = GaugeMetricFamily("rollout_step_halted", "1 while a gate has halted the step's rollout",
                                   labels=["step"])
        for step_id, current, index, is_halted in steps:
            state.add_metric([step_id, current], 1.0)
            stages = self.stages(step_id)
            if current == "rolling_out" and stages and index is not None and 0 <= index < len(stages):
                stage.add_metric([step_id], float(stages[index]))
            halted.add_metric([step_id], 1.0 if is_halted else 0.0)
        yield from (state, stage, halted)
        rows = GaugeMetricFamily("rollout_backfill_rows_done", "rows a backfill has visited", labels=["step", "job"])
        changed = GaugeMetricFamily("rollout_backfill_rows_changed", "rows a backfill has changed",
                                    labels=["step", "job"])
        rate = GaugeMetricFamily("rollout_backfill_rows_per_second", "rows visited per second of work",
                                 labels=["step", "job"])
        running = GaugeMetricFamily("rollout_backfill_state", "1 for the backfill's current state",
                                    labels=["step", "job", "state"])
        for step_id, job, job_state, covered, done, seconds in backfills:
            rows.add_metric([step_id, job], float(covered))
            changed.add_metric([step_id, job], float(done))
            rate.add_metric([step_id, job], covered / seconds if seconds else 0.0)
            running.add_metric([step_id, job, job_state], 1.0)
        yield from (rows, changed, rate, running)

    def _read(self) -> tuple[list, list]:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(self.target, "rollout flags serve metrics")
                self._conn.execute("SET statement_timeout = '5s'")  # a scrape never hangs on a slow database
            if not self._conn.execute("SELECT to_regclass('rollout.steps') IS NOT NULL").fetchone()[0]:
                return [], []
            return (self._conn.execute(_STEPS, (self.target.env,)).fetchall(),
                    self._conn.execute(_BACKFILLS, (self.target.env,)).fetchall())

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


def registry(collector: RolloutCollector) -> tuple[CollectorRegistry, Counter]:
    """A registry of its own (not the process-wide default) with the collector, and the counter
    of evaluations served, by flag and reason."""
    own = CollectorRegistry()
    own.register(collector)
    served = Counter("rollout_ofrep_evaluations", "flag evaluations served over OFREP", ["flag", "reason"],
                     registry=own)
    return own, served
