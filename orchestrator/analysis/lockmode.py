"""PostgreSQL's table lock modes, in PostgreSQL's own order, with what each one conflicts with
(the table in the documentation's "Explicit Locking" chapter)."""

from __future__ import annotations

from enum import IntEnum


class Lock(IntEnum):
    """A table-level lock mode. The numbers are PostgreSQL's (lockdefs.h): higher is stronger,
    though two modes can each block something the other lets through (SHARE and SHARE UPDATE
    EXCLUSIVE): `covers` and `combine` compare what they block, not the numbers."""

    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def label(self) -> str:
        """As the documentation writes it: ACCESS EXCLUSIVE."""
        return self.name.replace("_", " ")

    @property
    def pg_name(self) -> str:
        """As pg_locks.mode writes it: AccessExclusiveLock."""
        return "".join(part.capitalize() for part in self.name.split("_")) + "Lock"

    @classmethod
    def parse(cls, text: str) -> Lock:
        """'ACCESS EXCLUSIVE', 'access exclusive' or 'AccessExclusiveLock'."""
        for mode in cls:
            if text.strip().upper() in (mode.label, mode.name) or text.strip() == mode.pg_name:
                return mode
        raise ValueError(f"{text!r} is not a PostgreSQL lock mode")

    @property
    def conflicts(self) -> frozenset[Lock]:
        return _CONFLICTS[self]

    @property
    def blocks(self) -> str:
        """What other sessions cannot do while it is held, in an operator's words."""
        return _BLOCKS[self]

    def covers(self, other: Lock) -> bool:
        """Whether this mode blocks at least everything `other` blocks."""
        return self.conflicts >= other.conflicts

    @classmethod
    def combine(cls, modes) -> Lock | None:
        """The weakest single mode that blocks everything the given modes block together
        (SHARE with SHARE UPDATE EXCLUSIVE is SHARE ROW EXCLUSIVE)."""
        wanted = frozenset().union(*(m.conflicts for m in modes)) if modes else None
        if not wanted:
            return None
        return min((m for m in cls if m.conflicts >= wanted), key=lambda m: (len(m.conflicts), m))


_A, _RS, _RE, _SUE, _S, _SRE, _E, _AE = Lock
_CONFLICTS = {
    _A: frozenset({_AE}),
    _RS: frozenset({_E, _AE}),
    _RE: frozenset({_S, _SRE, _E, _AE}),
    _SUE: frozenset({_SUE, _S, _SRE, _E, _AE}),
    _S: frozenset({_RE, _SUE, _SRE, _E, _AE}),
    _SRE: frozenset({_RE, _SUE, _S, _SRE, _E, _AE}),
    _E: frozenset({_RS, _RE, _SUE, _S, _SRE, _E, _AE}),
    _AE: frozenset(Lock),
}
_BLOCKS = {
    _A: "only ACCESS EXCLUSIVE DDL (reads and writes go on)",
    _RS: "only EXCLUSIVE and ACCESS EXCLUSIVE (reads and writes go on)",
    _RE: "DDL that blocks writes (reads and writes go on)",
    _SUE: "DDL and VACUUM (reads and writes go on)",
    _S: "writes and DDL (reads go on)",
    _SRE: "writes and DDL (reads go on)",
    _E: "writes and DDL (plain reads go on)",
    _AE: "reads, writes and DDL",
}
