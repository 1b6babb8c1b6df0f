"""create_index, drop_index, add_constraint, drop_constraint through their whole lifecycle."""

from __future__ import annotations

import pytest

from .harness import Case, run

TABLE = """
CREATE TABLE posts (id bigint PRIMARY KEY, title text, score real, author_id bigint);
CREATE TABLE "Users" ("Id" bigint PRIMARY KEY, "Email" text);
INSERT INTO "Users" SELECT g, 'u' || g FROM generate_series(1, 300) AS g;
INSERT INTO posts SELECT g, 'post ' || g, (g % 10) / 10.0, g FROM generate_series(1, 300) AS g;
"""


def valid(name: str):
    def check(db):
        row = db.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", (name,)).fetchone()
        assert row == (True,), f"{name} should be there and validated: {row}"
    return check


def index_valid(name: str):
    def check(db):
        row = db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)).fetchone()
        assert row == (True,), f"index {name}: {row}"
    return check


def gone(db, name: str) -> None:
    assert db.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,)


def fails(statement: str, error: str):
    def check(db):
        with pytest.raises(Exception, match=error), db.transaction():
            db.execute(statement)
    return check


CASES = [
    Case("index", TABLE, [{"op": "create_index", "name": "posts_title", "table": "posts", "columns": ["title"]}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1001, 'a')",), after_expand=index_valid("posts_title")),
    Case("partial unique index on a quoted table", TABLE,
         [{"op": "create_index", "name": "Users_Email_key", "table": "Users", "columns": ["Email"], "unique": True,
           "where": '"Email" IS NOT NULL'}], after_expand=index_valid('"Users_Email_key"')),
    Case("drop index", TABLE + "CREATE INDEX posts_score ON posts (score);",
         [{"op": "drop_index", "name": "posts_score", "table": "posts", "columns": ["score"]}],
         after_expand=index_valid("posts_score"),
         after_contract=lambda db: gone(db, "posts_score")),
    Case("check", TABLE, [{"op": "add_constraint", "table": "posts", "name": "score_range",
                           "check": "score BETWEEN 0 AND 1"}],
         old_writes=("INSERT INTO posts (id, score) VALUES (1002, 0.5)",), after_expand=valid("score_range")),
    Case("check that rows violate", TABLE + "UPDATE posts SET score = 7 WHERE id = 3;",
         [{"op": "add_constraint", "table": "posts", "name": "score_range", "check": "score BETWEEN 0 AND 1"}],
         fails="preconditions failed, nothing was changed: score_range_holds: found 1 row"),
    Case("foreign key", TABLE, [{"op": "add_constraint", "table": "posts", "name": "posts_author",
                                 "foreign_key": {"columns": ["author_id"], "references": "Users",
                                                 "referenced_columns": ["Id"], "on_delete": "set null"}}],
         after_expand=lambda db: (valid("posts_author")(db), fails(
             "INSERT INTO posts (id, author_id) VALUES (1003, 99999)", "foreign key")(db))),
    Case("unique", TABLE, [{"op": "add_constraint", "table": "posts", "name": "posts_title_key",
                            "unique": ["title"]}],
         after_expand=lambda db: (valid("posts_title_key")(db), fails(
             "INSERT INTO posts (id, title) VALUES (1004, 'post 1')", "duplicate key")(db))),
    Case("not null", TABLE, [{"op": "add_constraint", "table": "posts", "name": "title_set", "not_null": "title"}],
         old_writes=("INSERT INTO posts (id, title) VALUES (1005, 'x')",),
         after_expand=fails("INSERT INTO posts (id) VALUES (1006)", "null value")),
    Case("drop constraint", TABLE + "ALTER TABLE posts ADD CONSTRAINT score_positive CHECK (score >= 0);",
         [{"op": "drop_constraint", "table": "posts", "name": "score_positive", "definition": "CHECK (score >= 0)"}],
         after_expand=valid("score_positive"),
         after_contract_writes=("INSERT INTO posts (id, score) VALUES (1007, -1)", "DELETE FROM posts WHERE id = 1007")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lifecycle(case, tmp_path, dsn, db):
    run(case, tmp_path, dsn, db)


# -- add_constraint with a remediation ------------------------------------------------------------

SCORES = """
CREATE TABLE members (guild text, member text, score real, note text, PRIMARY KEY (guild, member));
INSERT INTO members SELECT 'g' || (g % 3), 'm' || g, ((g % 7) - 3) / 4.0, 'n' || g FROM generate_series(1, 400) AS g;
UPDATE members SET score = 'NaN' WHERE member = 'm5';
UPDATE members SET score = NULL WHERE member = 'm6';
UPDATE members SET score = 'Infinity', note = NULL WHERE member = 'm8';
"""
SCORES_BEFORE = "SELECT guild, member, score::text, note FROM members ORDER BY 1, 2"
CLAMP = {"op": "add_constraint", "table": "members", "name": "score_range", "check": "score >= -1 AND score <= 1",
         "remediation": {"key": ["guild", "member"],
                         "set": {"score": "CASE WHEN score = 'NaN' THEN 0 ELSE least(greatest(score, -1), 1) END",
                                 "note": "coalesce(note, '') || ' (clamped)'"}}}


def remediated(db):
    assert db.execute("SELECT count(*) FROM members WHERE NOT (score >= -1 AND score <= 1)").fetchone() == (0,)
    assert db.execute("SELECT score, note FROM members WHERE member = 'm5'").fetchone() == (0.0, "n5 (clamped)")
    assert db.execute("SELECT score, note FROM members WHERE member = 'm8'").fetchone() == (1.0, " (clamped)")
    assert db.execute("SELECT score, note FROM members WHERE member = 'm6'").fetchone() == (None, "n6")  # NULL holds
    kept = db.execute("SELECT count(*) FROM _rollout_originals_score_range").fetchone()[0]
    violating = 1 + 1 + sum(1 for g in range(1, 401) if abs(((g % 7) - 3) / 4.0) > 1 and g not in (5, 6, 8))
    assert kept == violating, (kept, violating)


def restored_exactly(before: list):
    def check(db):
        assert db.execute(SCORES_BEFORE).fetchall() == before
    return check


def _scores_before() -> list:
    rows = []
    for g in range(1, 401):
        score = ((g % 7) - 3) / 4.0
        rows.append([f"g{g % 3}", f"m{g}", score, f"n{g}"])
    by = {r[1]: r for r in rows}
    by["m5"][2], by["m6"][2], by["m8"][2], by["m8"][3] = "NaN", None, "Infinity", None
    return sorted((r[0], r[1], None if r[2] is None else r[2] if isinstance(r[2], str) else _real_text(r[2]), r[3])
                  for r in rows)


def _real_text(value: float) -> str:
    return repr(value).removesuffix(".0") if value == int(value) else repr(value)


REMEDIATION_CASES = [
    Case("check with a remediation (composite key, NaN, infinity, two columns)", SCORES, [CLAMP],
         old_writes=("UPDATE members SET note = 'seen' WHERE member = 'm1'",
                     "INSERT INTO members VALUES ('g9', 'x', 7, 'old bot, before the contract')"),
         after_expand=remediated,
         after_contract=lambda db: (valid("score_range")(db), remediated(db), fails(
             "INSERT INTO members VALUES ('g9', 'y', 7, 'refused')", "score_range")(db)),
         after_rollback=restored_exactly(_scores_before())),
    Case("a remediation that leaves rows violating refuses to start", SCORES,
         [{**CLAMP, "remediation": {"key": ["guild", "member"], "set": {"score": "score * 2"}}}],
         fails="preconditions failed, nothing was changed: score_range_remediable: found"),
]


@pytest.mark.parametrize("case", REMEDIATION_CASES, ids=[c.name for c in REMEDIATION_CASES])
def test_remediation_lifecycle(case, tmp_path, dsn, db):
    run(case, tmp_path, dsn, db)


def test_the_rollback_before_the_contract_restores_the_originals(tmp_path, dsn, db):
    from ..conftest import Rollout, write_plan
    from .harness import plan_for
    db.execute(SCORES)
    before = db.execute(SCORES_BEFORE).fetchall()
    rollout = Rollout(write_plan(tmp_path, plan_for(REMEDIATION_CASES[0])), dsn)
    assert rollout("apply").exit_code == 0
    remediated(db)
    assert rollout("rollback", "change").exit_code == 0
    assert db.execute(SCORES_BEFORE).fetchall() == before
    assert db.execute("SELECT to_regclass('_rollout_originals_score_range')").fetchone() == (None,)


def test_the_preview_shows_the_remediation_backfill(tmp_path, dsn, db):
    import json
    from ..conftest import Rollout, write_plan
    from .harness import plan_for
    db.execute(SCORES)
    rollout = Rollout(write_plan(tmp_path, plan_for(REMEDIATION_CASES[0])), dsn)
    preview = json.loads(rollout("plan", "--json").stdout)
    step = preview["steps"][0]
    assert [b["name"] for b in step["backfills"]] == ["remediate_score_range"]
    assert [p["name"] for p in step["preconditions"]] == ["score_range_remediable", "score_range_key_is_unique"]
    assert all(p["found"] == 0 for p in step["preconditions"])
    assert "remediate_score_range" in rollout("plan").output


@pytest.mark.parametrize("operation, error", [
    ({"op": "add_constraint", "table": "t", "name": "c", "unique": ["a"], "remediation": {"set": {"a": "1"}}},
     "remediation goes with check only"),
    ({**CLAMP, "remediation": {"key": ["guild"], "set": {"guild": "'x'"}}}, "cannot change the key column"),
    ({**CLAMP, "remediation": {"set": {"score": "0; DROP TABLE members"}}}, "is not an SQL expression"),
])
def test_a_remediation_is_checked_when_the_plan_is_loaded(operation, error):
    from pydantic import TypeAdapter, ValidationError
    from orchestrator.operations import Operation
    with pytest.raises(ValidationError, match=error):
        TypeAdapter(Operation).validate_python(operation)
