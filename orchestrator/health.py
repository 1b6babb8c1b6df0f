"""How far behind the standbys are, as a backfill sees it between batches.

A backfill writes WAL as fast as the primary takes it; a standby that replays slower falls
behind, and its readers see old data (a failover would lose it). Between batches the engine
asks how old the oldest WAL is that some standby has not replayed, and waits while that is
past the job's limit.

PostgreSQL's `pg_stat_replication.replay_lag` cannot say it: it is computed when the standby
reports progress, so a standby whose replay has stopped keeps showing the last value it reached,
and a caught-up one keeps its last value for a while. So the meter remembers when the primary's
WAL reached each position it saw: a standby that has replayed up to R is at least as late as
the first moment the primary was past R. A standby that has replayed all the primary wrote
counts as 0; `replay_lag` is used only for a standby that was behind before the first look.
A role that may not see the standbys' positions (neither superuser nor a member of
pg_read_all_stats) gets NULLs from PostgreSQL: nothing is measured.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import psycopg

# physical standbys only: a logical walsender (a subscription, a CDC connector) is connected to a
# database, and its position is what its consumer confirmed, which may lag by design
_POSITIONS = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint, s.standby, s.replayed, s.reported
FROM (SELECT 1) AS one LEFT JOIN (
    SELECT coalesce(nullif(r.application_name, ''), r.client_addr::text, 'pid ' || r.pid) AS standby,
           pg_wal_lsn_diff(r.replay_lsn, '0/0')::bigint AS replayed,
           extract(epoch FROM r.replay_lag)::float8 AS reported
    FROM pg_stat_replication AS r JOIN pg_stat_activity AS a ON a.pid = r.pid
    WHERE a.datname IS NULL
) AS s ON true
"""


@dataclass(frozen=True)
class StandbyLag:
    standby: str
    seconds: float
    behind: bool = False  # it has not replayed up to the fence it was measured against

    def shown(self) -> str:
        return f"standby {self.standby} replays {self.seconds:.1f}s behind"


class LagMeter:
    """Measures the furthest standby's lag, remembering the primary's WAL positions over time."""

    def __init__(self) -> None:
        self.marks: deque[tuple[int, float]] = deque(maxlen=100_000)  # (WAL position, when it was seen)
        self.on_standby: bool | None = None  # a standby has no standbys to wait for (asked once)
        self.position: int | None = None  # the primary's WAL position at the last measure

    def furthest(self, conn: psycopg.Connection, fence: int | None = None) -> StandbyLag | None:
        """The standby furthest behind, or None: no standby, or none this role may see. With a
        `fence` (a WAL position), `behind` says whether some standby has not replayed up to it.
        `position` is then the primary's WAL position now."""
        if self.on_standby is None:
            self.on_standby = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        if self.on_standby:
            return None
        rows = conn.execute(_POSITIONS).fetchall()
        now = time.monotonic()
        current = self.position = rows[0][0]
        if not self.marks or self.marks[-1][0] != current:
            self.marks.append((current, now))
        worst, behind = None, False
        for _, standby, replayed, reported in rows:
            if standby is None or replayed is None:
                continue
            behind = behind or (fence is not None and replayed < fence)
            if replayed >= current:
                seconds = 0.0
            else:
                since = next((at for position, at in self.marks if position > replayed), now)
                seconds = now - since
                if replayed < self.marks[0][0]:  # behind before the first mark: only PostgreSQL knows how far
                    seconds = max(seconds, reported or 0.0)
            if worst is None or seconds > worst.seconds:
                worst = StandbyLag(standby, seconds)
        return StandbyLag(worst.standby, worst.seconds, behind) if worst else None
