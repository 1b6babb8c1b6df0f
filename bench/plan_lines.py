"""How many lines a plan takes, by issue 11's rule: rollout.yaml plus every file under steps/
outside steps/baseline/, counting non-blank lines that are neither comments nor the text of a
step's or a flag's description.

- YAML is parsed with line positions (PyYAML's composer): the `description:` entry of each step
  and of each flag is left out whole, its key line and every line of its value (plain, quoted,
  folded `>` or literal `|`). Descriptions of checks and backfills, titles and `allow` reasons
  are not step or flag descriptions: they count. A description that shares its line with other
  keys (a flow mapping) leaves the line counted: the line holds more than description text.
- YAML comment lines (`#` first) do not count. SQL held in YAML (`sql:` scalars) is SQL: its
  comment lines do not count either.
- SQL: a line counts when it holds something outside comments (`--` to the end of the line,
  `/* ... */`, nested as PostgreSQL nests them; quotes, quoted identifiers and dollar-quoted
  bodies are followed, so `--` inside a string is not a comment). yoyo's directives
  (`-- transactional: false`, `-- depends: ...` in a file's leading comments) are comments, so
  they do not count; they are reported on their own, being instructions to rollout.

Prints each file's lines, the total, what was left out and what other prose was counted, and
last `plan_lines=N`.

    python bench/plan_lines.py [--plan rollout.yaml]
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
_DIRECTIVE = re.compile(r"^\s*--\s*(transactional|depends)\s*:", re.IGNORECASE)


@dataclass
class Count:
    path: str
    lines: int
    directives: int = 0
    excluded_description_lines: int = 0
    other_prose_lines: int = 0


def sql_code_lines(text: str) -> list[bool]:
    """For each line of `text`, whether it holds SQL outside comments."""
    lines = text.split("\n")
    code = [False] * len(lines)
    i, n, line = 0, len(text), 0
    depth = 0  # nesting of /* */
    dollar: list[str] = []  # open dollar-quote tags (a body is lexed as SQL: PL/pgSQL shares the syntax)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
            continue
        if depth:
            if text.startswith("/*", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("*/", i):
                depth, i = depth - 1, i + 2
            else:
                i += 1
            continue
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            continue
        if ch.isspace():
            i += 1
            continue
        code[line] = True
        if ch in ("'", '"'):
            # a string or quoted identifier, '' and "" doubling its quote; may span lines
            i += 1
            while i < n:
                if text[i] == "\n":
                    line += 1
                    code[line] = True
                if text[i] == ch:
                    if i + 1 < n and text[i + 1] == ch:
                        i += 2
                        continue
                    i += 1
                    break
                i += 1
            continue
        if ch == "$":
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
            if match:
                tag = match.group(0)
                if dollar and dollar[-1] == tag:
                    dollar.pop()
                else:
                    dollar.append(tag)
                i += len(tag)
                continue
        i += 1
    return code


def count_sql(text: str) -> tuple[int, int]:
    """(lines counted, yoyo directive lines: comments, so not counted)."""
    code = sql_code_lines(text)
    directives = sum(1 for number, line in enumerate(text.split("\n"))
                     if not code[number] and _DIRECTIVE.match(line) and _leading_comment(text, number))
    return sum(code), directives


def _leading_comment(text: str, number: int) -> bool:
    """yoyo reads directives only among the file's leading comment lines."""
    return all(not line.strip() or line.strip().startswith("--") for line in text.split("\n")[:number])


def _end_line(node: yaml.Node) -> int:
    """The last line a node's text occupies (0-based): a block scalar's end mark sits at the
    start of the line after it."""
    end = node.end_mark
    return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line


def _mapping_get(node: yaml.Node, key: str):
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return k, v
    return None


def _description_lines(root: yaml.Node, lines: list[str]) -> set[int]:
    """Lines holding nothing but a step's or a flag's description (key and value)."""
    owners: list[yaml.Node] = []
    flags = _mapping_get(root, "flags")
    if flags and isinstance(flags[1], yaml.MappingNode):
        owners += [v for _, v in flags[1].value]
    steps = _mapping_get(root, "steps")
    if steps and isinstance(steps[1], yaml.SequenceNode):
        owners += steps[1].value
    excluded: set[int] = set()
    for owner in owners:
        found = _mapping_get(owner, "description")
        if not found:
            continue
        key, value = found
        first, last = key.start_mark.line, _end_line(value)
        before = lines[first][:key.start_mark.column].strip().lstrip("-").strip()
        after = lines[last][value.end_mark.column:].strip() if value.end_mark.line == last else ""
        if before or (after and not after.startswith("#")):
            continue  # shares its line with other keys (flow style): the line counts
        excluded.update(range(first, last + 1))
    return excluded


def _sql_scalar_lines(root: yaml.Node) -> list[tuple[int, int, str]]:
    """(first line, last line, text) of every `sql:` scalar in the document."""
    found = []

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == "sql" and isinstance(v, yaml.ScalarNode):
                    found.append((v.start_mark.line, _end_line(v)))
                walk(v)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(root)
    return found


def _prose_lines(root: yaml.Node) -> set[int]:
    """Lines of every `description:` and `reason:` entry anywhere (checks, backfills, allow):
    counted by the rule unless they belong to a step or a flag; reported, for comparison."""
    found: set[int] = set()

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value in ("description", "reason"):
                    found.update(range(k.start_mark.line, _end_line(v) + 1))
                walk(v)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(root)
    return found


def count_yaml(text: str) -> tuple[int, int, int]:
    """(lines counted, step/flag description lines left out, other prose lines counted)."""
    lines = text.split("\n")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return 0, 0, 0
    excluded = _description_lines(root, lines)
    counted = {i for i, line in enumerate(lines)
               if line.strip() and not line.strip().startswith("#") and i not in excluded}
    for first, last in _sql_scalar_lines(root):
        # the scalar's lines as written; on the key's line, only what follows `sql:`
        block = lines[first:last + 1]
        at = block[0].find("sql:")
        if at >= 0:
            block = [block[0][at + 4:]] + block[1:]
        for offset, is_code in enumerate(sql_code_lines("\n".join(block))):
            if not is_code and block[offset].strip() and offset > 0:
                counted.discard(first + offset)  # an SQL comment line inside the scalar
    nonblank = {i for i, line in enumerate(lines) if line.strip()}
    return len(counted), len(excluded & nonblank), len(_prose_lines(root) & counted)


def count_plan(plan: Path) -> list[Count]:
    directory = plan.parent
    lines, described, prose = count_yaml(plan.read_text(encoding="utf-8"))
    counts = [Count(plan.name, lines, excluded_description_lines=described, other_prose_lines=prose)]
    steps = directory / "steps"
    if steps.is_dir():
        for path in sorted(p for p in steps.rglob("*") if p.is_file()):
            relative = path.relative_to(directory)
            if relative.parts[:2] == ("steps", "baseline"):
                continue
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".sql":
                n, directives = count_sql(text)
                counts.append(Count(str(relative), n, directives))
            elif path.suffix in (".yaml", ".yml"):
                n, _, prose = count_yaml(text)
                counts.append(Count(str(relative), n, other_prose_lines=prose))
            else:
                counts.append(Count(str(relative), sum(1 for line in text.split("\n") if line.strip())))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=REPO / "rollout.yaml", help="the plan (default: the repository's)")
    args = parser.parse_args(argv)
    counts = count_plan(args.plan.resolve())
    width = max(len(c.path) for c in counts)
    for c in counts:
        notes = []
        if c.excluded_description_lines:
            notes.append(f"{c.excluded_description_lines} step/flag description lines left out")
        if c.other_prose_lines:
            notes.append(f"{c.other_prose_lines} lines of check/backfill descriptions and allow reasons counted")
        if c.directives:
            notes.append(f"{c.directives} yoyo directive line(s), comments: left out")
        print(f"{c.path:<{width}}  {c.lines:>4}" + (f"  ({'; '.join(notes)})" if notes else ""))
    total = sum(c.lines for c in counts)
    sql_files = sum(1 for c in counts if c.path.endswith(".sql"))
    head = counts[0]
    print(f"{len(counts)} files ({sql_files} SQL): {head.path} {head.lines}, steps/ {total - head.lines}")
    print(f"plan_lines={total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
