"""`rollout status` at 80 and 120 columns: states, dates and notes are never cut off."""

from __future__ import annotations

import io

from orchestrator.api import StepStatus
from orchestrator.cli import SafeConsole, status_table

FIELDS = StepStatus.__dataclass_fields__


def step(**values) -> StepStatus:
    defaults = {name: None for name in FIELDS}
    defaults.update(id="verification_status_enum", title="t", priority="high", state="rolling_back",
                    migrations_applied=1, migrations_total=5, updated_at="2026-11-24T17:47:15.123+00:00",
                    updated_by="alice@workstation", flag="canonical_verification_statuses",
                    stage="not started (0/2)")
    defaults.update(values)
    return StepStatus(**{k: v for k, v in defaults.items() if k in FIELDS})


def rendered(width: int, rows) -> str:
    buffer = io.StringIO()
    SafeConsole(file=buffer, width=width, markup=False, highlight=False).print(status_table(rows, "plan in local", width))
    return buffer.getvalue()


def test_status_fits_80_120_and_160_columns_without_cutting_what_matters():
    rows = [step(), step(id="composite_indexes", state="rolling_out",
                         flag_mismatch="flag canonical_verification_statuses at 50%, stage 1/3 expects 10%")]
    for width in (80, 120, 160):
        text = rendered(width, rows)
        lines = text.splitlines()
        assert all(len(line) <= width for line in lines)
        assert "rolling_back" in text and "rolling_out" in text and "…" not in text
        assert ("2026-11-24 17:47:15" if width == 160 else "11-24 17:47") in text
        if width == 160:  # the boxed table is whole: its right border is there on every line
            assert all(line.rstrip()[-1] in "┓┃┩│┘" for line in lines[1:] if line.strip())
        if width >= 120:
            assert "started (0/2)" in text and "expects 10%" in text  # the note wraps, whole


def test_backfill_status_fits_80_and_120_columns():
    from orchestrator.api import BackfillStatus
    from orchestrator.cli import backfill_table

    fields = BackfillStatus.__dataclass_fields__
    row = BackfillStatus(**{**{name: None for name in fields}, "step_id": "verification_status_enum",
                            "name": "fill_status_kind", "table": "verification_events", "state": "interrupted",
                            "rows_covered": 1_234_567, "rows_changed": 1_000_000, "rows_failed": 0,
                            "estimate": 10_000_000, "batches": 40, "batch_size": 5000, "rows_per_second": 250_000.0,
                            "eta_seconds": 35.0, "error": None})
    for width in (80, 120, 160):
        buffer = io.StringIO()
        SafeConsole(file=buffer, width=width, markup=False, highlight=False).print(backfill_table([row], "t", width))
        text = buffer.getvalue()
        assert all(len(line) <= width for line in text.splitlines())
        assert "interrupted" in text and "1,234,567" in text and "~10,000,000" in text and "…" not in text
