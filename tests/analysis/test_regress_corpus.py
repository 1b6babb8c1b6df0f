"""No statement PostgreSQL's parser accepts crashes the analysis: every statement of PostgreSQL's
own regression suite (../shared/corpora/postgres-regress, 217 files nobody here wrote) is
analysed without an exception. Pure: no database."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pglast
import pytest

from orchestrator.analysis import analyze

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpora" / "postgres-regress"
META = re.compile(r"^\s*\\.*$", re.MULTILINE)  # psql meta-commands (\set, \d, \gset ...)


def statements(path: Path) -> list[str]:
    text = META.sub("", path.read_text(encoding="utf-8", errors="replace"))
    try:
        return list(pglast.split(text, with_parser=False))
    except pglast.parser.ParseError:
        return []


@pytest.mark.skipif(os.environ.get("ROLLOUT_TEST_POSTGRES") == "15",
                    reason="pure (no database): it ran in the suite's first run")
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the regression corpus is not at {CORPUS} (a clone without "
                                                "../shared): this test needs it")
def test_every_statement_of_postgresqls_regression_suite_is_analysed():
    analysed = skipped = 0
    crashes = []
    for path in sorted(CORPUS.glob("*.sql")):
        for statement in statements(path):
            try:
                pglast.parse_sql(statement)
            except pglast.parser.ParseError:
                skipped += 1  # meant to fail, or psql syntax: PostgreSQL's parser refuses it too
                continue
            try:
                effects = analyze(statement)
            except Exception as exc:  # noqa: BLE001 - the point is to catch every kind
                crashes.append(f"{path.name}: {statement[:80]!r}: {type(exc).__name__}: {exc}")
                continue
            analysed += 1
            assert all(e.kind for e in effects)
    assert not crashes, f"{len(crashes)} of {analysed + len(crashes)} statements crashed the analysis:\n" + \
        "\n".join(crashes[:30])
    assert analysed > 20_000, f"only {analysed} statements analysed ({skipped} refused by the parser)"
