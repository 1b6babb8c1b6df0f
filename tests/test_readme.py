"""README.md's walkthrough, run as a newcomer runs it: every `$ rollout ...` command of its
examples, in the order the README shows them, on a fresh copy of the default plan (the quick
start's `rollout apply` first). Each must exit as shown and print every line of the README's
excerpt under it (times, dates, sizes and counts may differ; `...` stands for anything).

The example of a second operator being turned away needs two processes at once and is left to
tests/test_faults.py."""

from __future__ import annotations

import re
import shutil
import shlex

from click.testing import CliRunner

from orchestrator import embedded
from orchestrator.cli import cli

from .conftest import REPO

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[str, list[str]]]:
    """(command, expected lines) for each `$ rollout` line of the README's examples, in order."""
    found = []
    for block in FENCE.findall((REPO / "README.md").read_text()):
        if "$ rollout" not in block or "echo $?" in block:
            continue
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:].split("  #")[0].strip(), []))
            elif found:
                found[-1][1].append(line)
    return found


def normal(text: str) -> str:
    text = re.sub(r"\d{4}-\d\d-\d\d(T| )?", "D ", text)
    text = re.sub(r"\d\d:\d\d:\d\d", "T", text)
    number = r"\d+(?:,\d{3})*(?:\.\d+)?"  # 1,234.5 (a comma after a number is punctuation)
    text = re.sub(rf"~?{number} ?(kB|MB|GB|B|ms|s)\b", "Q", text)
    text = re.sub(number, "N", text)
    text = re.sub(r"[─━┄]+", "-", text)
    return " ".join(text.split())


def matches(expected: str, output: str) -> bool:
    """The expected line somewhere in the output (rich wraps long lines: the output is read as
    one run of words)."""
    pattern = ".*?".join(re.escape(part.strip()) for part in normal(expected).split("..."))
    return re.search(pattern, normal(output)) is not None


def test_the_readme_walkthrough_works_in_order_and_prints_what_it_shows(tmp_path):
    shutil.copy(REPO / "rollout.yaml", tmp_path / "rollout.yaml")
    shutil.copytree(REPO / "steps", tmp_path / "steps")
    runner = CliRunner()

    def run(command: str):
        args = shlex.split(command)[1:]
        return runner.invoke(cli, ["--plan", str(tmp_path / "rollout.yaml"), *args], env={"ROLLOUT_ACTOR": "alice"})

    try:
        first = run("rollout apply")  # the quick start's main job
        assert first.exit_code == 0, first.output
        for command, expected in examples():
            result = run(command)
            assert result.exit_code == 0, f"{command}: exit {result.exit_code}\n{result.output}"
            missing = [e for e in expected if e.strip() and e.strip() != "..." and not matches(e, result.output)]
            assert not missing, f"{command}: the README shows lines this run does not print:\n" + \
                "\n".join(missing[:5]) + "\n--- printed (normalized):\n" + normal(result.output)[:6000]
    finally:
        embedded.stop(str(tmp_path))
