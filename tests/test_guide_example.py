"""docs/your-first-plan.md's example, docs/examples/shop: the plan checks, and on a fresh
database it bootstraps, seeds its messy rows, repairs them, and goes through every stage of
its flag and the contract to the schema the guide shows."""

from __future__ import annotations

import json
import shutil

from .conftest import REPO, Rollout

EXAMPLE = REPO / "docs" / "examples" / "shop"


def states(rollout: Rollout) -> dict[str, str]:
    return {s["id"]: s["state"] for s in json.loads(rollout("status", "--json").output)["steps"]}


def column(db, table: str, name: str):
    """(type, NOT NULL) of a column, or None when it does not exist."""
    return db.execute(
        "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attname = %s AND attnum > 0 AND NOT attisdropped",
        (table, name)).fetchone()


def test_the_guide_example_applies_through_every_stage_and_the_contract(tmp_path, dsn, db):
    shutil.copytree(EXAMPLE, tmp_path / "shop")
    rollout = Rollout(tmp_path / "shop" / "rollout.yaml", dsn)

    checked = rollout("check")
    assert checked.exit_code == 0, checked.output
    assert "5 steps" in checked.output

    seeded = rollout("db", "seed", "--rows", "1000")  # bootstraps schema.sql into the empty database first
    assert seeded.exit_code == 0, seeded.output
    mess = db.execute(
        "SELECT (SELECT count(*) FROM customers WHERE email IS NULL),"
        " (SELECT count(*) FROM (SELECT email FROM customers WHERE email IS NOT NULL"
        "                        GROUP BY email HAVING count(*) > 1) AS d),"
        " (SELECT count(*) FROM order_items WHERE quantity <= 0),"
        " (SELECT count(*) FROM order_items AS i WHERE NOT EXISTS (SELECT 1 FROM orders AS o WHERE o.id = i.order_id))"
    ).fetchone()
    assert all(n > 0 for n in mess), mess  # the seed leaves something for each precondition to find

    preview = rollout("plan")
    assert preview.exit_code == 0, preview.output  # the failing preconditions run after clean_data: not blocking
    assert "(runs after clean_data: not blocking)" in preview.output

    applied = rollout("apply")
    assert applied.exit_code == 0, applied.output
    assert states(rollout) == {"clean_data": "done", "customer_emails": "done", "order_integrity": "done",
                               "checkout_v2": "rolling_out", "cleanup": "pending"}
    assert column(db, "products", "_rollout_price") == ("numeric(10,2)", False)  # the shape the new checkout reads
    assert column(db, "customers", "full_name") == ("text", False)

    for percent in (10, 50, 100):
        advanced = rollout("advance", "checkout_v2")
        assert advanced.exit_code == 0, advanced.output
        assert f"flag checkout_v2 at {percent}%" in advanced.output

    contract = rollout("apply")
    assert contract.exit_code == 0, contract.output
    assert set(states(rollout).values()) == {"done"}

    assert column(db, "customers", "email") == ("text", True)
    assert column(db, "customers", "full_name") == ("text", False)
    assert column(db, "customers", "name") is None
    assert column(db, "customers", "fax") is None
    assert column(db, "products", "price") == ("numeric(10,2)", False)
    assert column(db, "products", "_rollout_price") is None
    assert column(db, "order_items", "line_total_cents") == ("bigint", True)
    constraints = dict(db.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid IN ('customers'::regclass, 'order_items'::regclass) AND convalidated AND contype <> 'n'"
    ).fetchall())
    assert constraints["customers_email_key"] == "UNIQUE (email)"
    assert constraints["order_items_quantity_positive"] == "CHECK ((quantity > 0))"
    assert constraints["order_items_order_fk"] == "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE"
    assert db.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('orders_customer_placed')"
                      ).fetchone() == (True,)
    assert db.execute("SELECT to_regclass('newsletter_signups')").fetchone() == (None,)
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '_rollout_%'").fetchone() == (0,)
    # the data came along: every line total filled, the legacy ' 4,50' prices converted
    assert db.execute("SELECT count(*) FROM order_items WHERE line_total_cents <> quantity * unit_price_cents"
                      ).fetchone() == (0,)
    assert db.execute("SELECT price FROM products WHERE sku = 'SKU-25'").fetchone()[0] == 25.5
