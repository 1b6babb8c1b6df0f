"""A fleet's status for people (80 columns and up) and for machines (JSON).

A thousand targets do not fit a screen, but they rarely differ much: targets whose steps are
all in the same states share one line of the matrix, with how many they are and the first
names. The failures are listed one by one, with their reasons.
"""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from . import state
from .fleet import FleetStatus

MARKS = {state.DONE: "✓", state.ROLLING_OUT: "~", state.PENDING: "·", state.FAILED: "✗", "aborted": "!"}
LEGEND = "✓ done  ~ rolling out  · pending  ✗ failed  ! aborted  ? unreachable  * changing"


def _mark(shown_state: str) -> str:
    return MARKS.get(shown_state, "*")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render(status: FleetStatus, width: int) -> list:
    """What `rollout status` prints for a fleet: heading, counts per step, waves, matrix, failures."""
    reachable = [t for t in status.targets if t.steps is not None]
    steps = [s.id for s in reachable[0].steps] if reachable else []
    eta = status.eta_seconds()
    done = sum(t.done for t in status.targets)
    heading = (f"fleet {status.env}: {len(status.targets)} targets, {done} done"
               + (f", apply ETA {_duration(eta)}" if eta is not None else ""))
    parts: list = [Text(heading, style="bold")]

    counts = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    counts.add_column("#", justify="right")
    counts.add_column("step", no_wrap=True, overflow="ellipsis", max_width=max(12, width - 40))
    for column in ("done", "rolling", "pending", "failed", "other"):
        counts.add_column(column, justify="right")
    for number, step in enumerate(steps, 1):
        states = [t.steps[number - 1].state for t in reachable]  # every target lists the plan's steps in order
        named = [states.count(state.DONE), states.count(state.ROLLING_OUT), states.count(state.PENDING),
                 states.count(state.FAILED)]
        counts.add_row(str(number), step, *map(str, named), str(len(states) - sum(named)))
    parts.append(counts)

    waves = "  ".join(f"{wave.name} {sum(t.done for t in status.targets if t.target in names)}/{len(names)}"
                      for wave, names in status.waves if names)
    parts.append(Text(f"waves (done/targets): {waves}"))

    groups: dict[str, list[str]] = {}
    for t in status.targets:
        row = "?" * len(steps) if t.steps is None else "".join(_mark(s.state) for s in t.steps)
        groups.setdefault(row, []).append(t.target)
    parts.append(Text("targets by state, a column for each step above:", style="dim"))
    parts.append(Text(f"  {LEGEND}", style="dim"))
    for row, names in sorted(groups.items(), key=lambda item: -len(item[1])):
        prefix = f"  {row}  {len(names):>5}  "
        room = max(10, width - len(prefix))
        shown = ", ".join(names)
        if len(shown) > room:
            shown = shown[:room - 4].rsplit(", ", 1)[0] + ", ..."
        parts.append(Text(prefix + shown))

    failures = [(t.target, "unreachable: " + (t.error or "")) for t in status.targets if t.steps is None]
    failures += [(t.target, f"{s.id} {s.state}" + (f" ({s.phase}): {s.error}" if s.error else ""))
                 for t in reachable for s in t.steps if s.state == state.FAILED or s.error]
    failures += [(t.target, t.last_failure) for t in reachable if t.last_failure and
                 not any(s.state == state.FAILED or s.error for s in t.steps)]
    if failures:
        parts.append(Text(f"failures ({len(failures)}):", style="bold red"))
        parts += [Text(f"  {target}: {why}", style="red") for target, why in failures]
    return parts


def as_json(status: FleetStatus) -> dict:
    return {
        "env": status.env,
        "eta_seconds": status.eta_seconds(),
        "waves": [{"name": wave.name, "targets": names,
                   "done": sum(t.done for t in status.targets if t.target in names)} for wave, names in status.waves],
        "targets": [{"name": t.target, "wave": t.wave, "labels": t.labels, "reachable": t.steps is not None,
                     "error": t.error, "last_failure": t.last_failure, "done": t.done,
                     "steps": [s.__dict__ for s in t.steps] if t.steps is not None else None}
                    for t in status.targets],
    }


def events_table(merged, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("at", "target", "actor", "step", "kind", "ok"):
        table.add_column(column, no_wrap=True)
    table.add_column("message")
    for target, e in merged:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", target, e.actor, e.step_id or "", e.kind,
                      Text("✓", style="green") if e.ok else Text("✗", style="red"), e.message)
    return table
