"""bench/everyday/rollout.yaml, the twelve everyday changes that bench/everyday_lines.py sets
beside pgroll's, is a real plan: applied to the blog's rows through every phase (expand, the
flag's stages, contract), it ends in the new shape, and rolled back step by step it gives every
row back."""

from __future__ import annotations

import shutil

from .conftest import REPO, Rollout

# every value the rollbacks restore; a dropped table's rows come back from the backup rollout
# takes before the contract (drop_table), so they are left out
ROWS = ("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (SELECT 'u', id, NULL::bigint, name || email FROM users UNION ALL "
        "SELECT 'p', id, user_id, title || coalesce(body, '') || coalesce(legacy_score, '') FROM posts UNION ALL "
        "SELECT 'r', id, post_id, coalesce(review, '<null>') || rating FROM reviews) AS t")


def test_the_everyday_plan_applies_and_rolls_back(tmp_path, dsn, db):
    shutil.copytree(REPO / "bench" / "everyday", tmp_path / "everyday")
    rollout = Rollout(tmp_path / "everyday" / "rollout.yaml", dsn)
    assert rollout("apply", "unique_email").exit_code == 0  # bootstraps the blog; changes no row
    before = db.execute(ROWS).fetchone()
    assert db.execute("SELECT count(*) FROM reviews WHERE review IS NULL").fetchone()[0] == 750
    expanded = rollout("apply")
    assert expanded.exit_code == 0, expanded.output
    advanced = rollout("advance", "--all")
    assert advanced.exit_code == 0, advanced.output
    finished = rollout("apply")
    assert finished.exit_code == 0, finished.output
    assert "every requested step is done" in finished.output, finished.output
    shape = dict(db.execute(
        "SELECT table_name || '.' || column_name, data_type || CASE WHEN is_nullable = 'NO' THEN ' not null' ELSE '' END "
        "FROM information_schema.columns WHERE table_schema = 'public' AND table_name IN ('users', 'posts', 'reviews', "
        "'comments')").fetchall())
    assert shape["posts.slug"] == "text not null" and shape["reviews.review"] == "text not null"
    assert shape["reviews.rating"] == "integer" and shape["users.full_name"] == "text not null"
    assert "users.name" not in shape and "posts.legacy_score" not in shape and "comments.body" in shape
    assert db.execute("SELECT to_regclass('tags'), to_regclass('post_review_counts') IS NOT NULL").fetchone() == (None, True)
    assert db.execute("SELECT slug FROM posts WHERE id = 7").fetchone() == ("post-number-7",)
    assert db.execute("SELECT count(*) FROM reviews WHERE review = 'no review'").fetchone()[0] == 750
    alone = rollout("rollback", "drop_tags")
    assert alone.exit_code == 2 and "rollout rollback drop_tags --cascade" in alone.output, alone.output
    together = rollout("rollback", "drop_tags", "--cascade")  # the seven steps blog_v2 switches
    assert together.exit_code == 0, together.output
    assert together.output.strip().endswith("rolled back in local: drop_tags, drop_legacy_score, rename_name, "
                                            "rating_integer, review_required, add_slug"), together.output
    for step in ("comments", "review_counts", "posts_by_user", "posts_user_fk", "title_length", "unique_email"):
        undone = rollout("rollback", step)
        assert undone.exit_code == 0, (step, undone.output)
    assert db.execute(ROWS).fetchone() == before  # every value back: NULL reviews, the dropped column's
    assert db.execute("SELECT count(*) FROM tags").fetchone() == (0,)  # the table is back; its rows are in the backup
    backups = list((tmp_path / "everyday" / ".rollout" / "backups").rglob("*drop_tags*"))
    assert backups, "drop_tags' contract backs up the table first"
