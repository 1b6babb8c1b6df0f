"""bench/plan_lines.py counts by issue 11's rule: no database, small texts with known counts."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

from .conftest import REPO

_spec = importlib.util.spec_from_file_location("plan_lines", REPO / "bench" / "plan_lines.py")
plan_lines = sys.modules["plan_lines"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(plan_lines)


def test_sql_comments_strings_and_dollar_bodies():
    text = textwrap.dedent("""\
        -- transactional: false
        -- a comment
        CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $$
        -- a comment in the body
        BEGIN /* a block
        comment */ RETURN '--not a comment
        -- nor this: inside a string';
        END $$;
        /* nested /* comments */ still a comment */

        SELECT 1; -- code, then a comment
        """)
    assert plan_lines.count_sql(text) == (6, 1)  # 6 lines of code; 1 directive, a comment


def test_step_and_flag_descriptions_are_left_out_and_other_prose_counted():
    text = textwrap.dedent("""\
        # a comment
        version: 1
        flags:
          a:
            description: >
              folded

              text
            default: off
          b: {description: shares its line, default: off}
        steps:
          - id: s
            description: |
              literal
            title: t
            preconditions:
              - name: c
                description: a check's description counts
                sql: |
                  -- an SQL comment in YAML
                  SELECT 1
                  /* another */
        """)
    counted, left_out, prose = plan_lines.count_yaml(text)
    # version, flags, a, default, b (flow: shares its line), steps, - id, title, preconditions,
    # - name, the check's description, sql: |, SELECT 1
    assert (counted, left_out, prose) == (13, 5, 2)


def test_the_frozen_hand_written_plan_counts_as_the_repository_plan_did():
    counts = plan_lines.count_plan(REPO / "tests" / "plans" / "handwritten" / "rollout.yaml")
    assert sum(c.lines for c in counts) == 906
    assert not any(c.path.startswith("steps/baseline") for c in counts)
