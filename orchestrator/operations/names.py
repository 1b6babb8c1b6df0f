"""Names rollout gives the objects it creates for an operation: a shadow column, the trigger
that keeps two shapes in step, a check. PostgreSQL truncates names past 63 bytes silently,
which could make two of them collide: such a name is refused instead."""

from __future__ import annotations

MAX = 63


def fit(name: str) -> str:
    if len(name.encode()) > MAX:
        raise ValueError(f"the generated name {name!r} is longer than PostgreSQL's 63 bytes: "
                         "choose a shorter table or column name for the operation")
    return name


def bare(table: str) -> str:
    return table.split(".")[-1]


def shadow(column: str) -> str:
    """The column that holds the new shape of `column` between expand and contract."""
    return fit(f"_rollout_{column}")


def sync_trigger(table: str, column: str) -> str:
    return fit(f"_rollout_sync_{bare(table)}_{column}")


def sync_function(table: str, column: str) -> str:
    return fit(f"_rollout_sync_{bare(table)}_{column}")


def check(table: str, what: str) -> str:
    return fit(f"{bare(table)}_{what}_check")


def not_null_check(table: str, column: str) -> str:
    return fit(f"_rollout_{bare(table)}_{column}_not_null")


def old_column(column: str) -> str:
    """The old column rebuilt, under this name, by a rollback after the contract."""
    return fit(f"_rollout_old_{column}")


def back_trigger(table: str, column: str) -> str:
    """The trigger (and its function) keeping the rebuilt old column current during that rollback."""
    return fit(f"_rollout_back_{bare(table)}_{column}")
