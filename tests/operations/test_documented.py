"""docs/plan.md shows, for every operation kind, an example and the SQL it generates: this test
compiles each example and compares, so the reference cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from orchestrator.operations import KINDS, Operation, render

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "plan.md").read_text()
SECTION = re.compile(r"^#### `(\w+)`\n(.*?)(?=^#### |^### |^## |\Z)", re.MULTILINE | re.DOTALL)
BLOCK = re.compile(r"```(yaml|sql)\n(.*?)```", re.DOTALL)


def listing(operation) -> str:
    """The generated SQL as the reference shows it: each migration, then its rollback."""
    out = []
    for part in operation.compile().parts:
        where = "outside a transaction" if not part.transactional else "in a transaction"
        out.append(f"-- {part.phase}: {part.name} ({where})")
        out += [render(s) + ";" for s in part.apply]
        out.append("-- rollback")
        job = part.restore
        if job is not None:  # runs first, through the backfill engine
            out.append(f"-- first, {job.name}: batch by batch over {job.table} "
                       f"({', '.join(job.key) if job.key else 'its primary key'})")
            if job.prepare:
                out += ["-- once, before the batches", job.prepare + ";", "-- each batch"]
            out.append(job.sql + ";" if job.sql else "UPDATE {} SET {};".format(
                job.table, ", ".join(f"{c} = ({e})" for c, e in job.set.items())))
        out += [render(s) + ";" for s in part.rollback] or ["-- nothing to undo"]
    compiled = operation.compile()
    for job in compiled.backfills:
        out.append(f"-- backfill {job.name}: batch by batch over {job.table} "
                   f"({', '.join(job.key) if job.key else 'its primary key'})" + (f", where {job.where}" if job.where else ""))
        out.append(job.sql + ";" if job.sql else "UPDATE {} SET {};".format(
            job.table, ", ".join(f"{c} = ({e})" for c, e in job.set.items())))
    for kind, checks in (("verify", compiled.verify), ("at every stage", compiled.gates)):
        for each in checks:
            out += [f"-- {kind}: {each.name} (no row may come back)", each.sql + ";"]
    return "\n".join(out) + "\n"


SECTIONS = {name: body for name, body in SECTION.findall(DOCS)}


def test_every_kind_has_a_section():
    kinds = {kind.model_fields["op"].annotation.__args__[0] for kind in KINDS}
    assert kinds <= set(SECTIONS), f"docs/plan.md lacks a section for {sorted(kinds - set(SECTIONS))}"


def examples(section: str) -> list[tuple[str, str]]:
    """The section's examples: each yaml block with the sql block that follows it."""
    blocks = BLOCK.findall(section)
    pairs = [(blocks[i][1], blocks[i + 1][1]) for i in range(len(blocks) - 1)
             if blocks[i][0] == "yaml" and blocks[i + 1][0] == "sql"]
    assert pairs and len(pairs) * 2 == len(blocks), "each example is a yaml block followed by its sql block"
    return pairs


@pytest.mark.parametrize("kind", sorted(SECTIONS))
def test_the_example_generates_the_sql_shown(kind):
    for example, shown in examples(SECTIONS[kind]):
        operation = TypeAdapter(Operation).validate_python(yaml.safe_load(example)[0])
        assert listing(operation) == shown
