"""convert_to_enum: a text column converted to an enum through a shadow column, a trigger and a
backfill, swapped in one short transaction.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import Allowance, Backfill, ColumnName, Seq, TableName, _Model
from .. import names
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from ..constraint_sql import set_not_null
from ..enum_labels import Label, label_fits
from ..raw_sql import statements, undoable
from ..rebuilt_indexes import RebuiltIndex, index_renames, indexes_fit, new_indexes, old_indexes
from ..restores import column_back
from ..sql import dollar_quoted, ident, literal_name, regclass, regtype, render, type_name


class SwapSql(_Model):
    """Statements run inside the swap's transaction (after the rename), and their inverse inside
    its rollback's (last, once the text column is back): for an object that names the column, such as a
    function comparing it with a legacy value, which must change in the same instant."""

    up: str = Field(description="statements run at the end of the swap's transaction")
    down: str | None = Field(None, description="statements that undo them, run last in the swap's rollback ('' for "
                                               "nothing); omitted: rollout undoes what up creates or replaces, as "
                                               "the sql operation does")

    @model_validator(mode="after")
    def _parses(self) -> "SwapSql":
        if not statements(self.up, "swap_sql.up"):
            raise ValueError("swap_sql.up holds no statement")
        self.undoable()
        return self

    def undoable(self) -> tuple[tuple[sql.Composable, ...], tuple[sql.Composable, ...]]:
        """The statements the swap runs, and those its rollback runs."""
        if self.down is None:
            return undoable(self.up, "swap_sql.up")
        return statements(self.up, "swap_sql.up"), statements(self.down, "swap_sql.down")


class ConvertToEnum(Operation):
    """A text column converted to an enum type on a live table, the old application writing
    text all along (expand/contract).

    SQL, expand (one transaction): a table `_rollout_originals_<table>_<column>` (key text
    PRIMARY KEY: the row's `key` as text, original `column_type`);
    `_rollout_convert_<table>_<column>(text)`, an SQL function applying `mapping`
    (legacy value -> label; a label stays itself; anything else: an error with `on_unmapped:
    stop`, NULL with `null`, `default_label` when given); `ALTER TABLE t ADD COLUMN
    _rollout_<column> <enum>` (nullable, no default: no rewrite); and a BEFORE INSERT OR UPDATE
    OF <column> trigger that sets the enum column from the text the application writes and keeps
    any value that is not already a canonical label in the originals table. Locks: ACCESS
    EXCLUSIVE on the table for the instant of ADD COLUMN, SHARE ROW EXCLUSIVE for CREATE
    TRIGGER, no scan. Then a backfill converts the existing rows in key-range batches (each
    batch saves its originals in the same transaction); with `stop`, an unmapped value stops it
    on that row, naming its key and the value. Verification, and a gate at every stage of the step's rollout: every text value has its enum value.
    `indexes` lists the column's indexes: each is built again on the enum column in the expand
    phase (CONCURRENTLY, outside a transaction, as `_rollout_<name>`), so the new application's
    reads have it from the first stage (the backfill maintains it as it fills the column).

    Both versions: until the contract both applications write the text column (the new one
    with canonical labels) and the trigger converts every write; an unmapped value the old
    application writes fails that write with `stop` (PostgreSQL's 'invalid input value for
    enum'), since the enum could not hold it. After the contract the column of the same name is
    the enum, whose values read as the same strings.

    Contract: NOT NULL when `not_null` says the text column is (a CHECK added NOT VALID,
    validated under SHARE UPDATE EXCLUSIVE, then SET NOT NULL without a scan); otherwise, unless
    unmapped values become NULL, a validated CHECK that every text value was converted. Then one
    short transaction swaps: DROP TRIGGER, DROP FUNCTION, `DROP COLUMN <column>` (rollout backs
    the table up first), `RENAME COLUMN _rollout_<column> TO <column>`, and the column's default
    as a label (`column_default`). The rename is what keeps readers on the same name, so
    squawk's renaming-column finding is shown as allowed for this migration. The conversion
    function and the originals table stay after the contract: the rollback needs them.

    Rollback before the contract: drop the trigger, the functions, the enum column and the
    originals table (and the indexes built on it). After it, the flag stays on (the application
    keeps writing labels) while the text column is rebuilt under `_rollout_old_<column>`: a
    trigger keeps it current and a job of the backfill engine (`restore_<table>_<column>`, in
    batches by `key`, each committed with its checkpoint) fills it with each row's original
    where its enum value still is that original's conversion, else the label. Then one short
    transaction gives the indexes their temporary names back, renames the enum column back and
    the rebuilt one to the column's name, restores the default and the sync trigger and adds the
    NOT NULL check NOT VALID; `swap_sql.down` (or, without it, the inverse rollout writes) runs
    last in it, once the text column is back. NOT NULL is then validated in its own transaction and the text column's `indexes` are built
    again, concurrently.

    Preconditions, before anything changes: the column's type, NOT NULL and default are the ones
    declared (the rollback rebuilds it from them), `key` is a unique key, nothing else depends on
    the column but the `indexes` listed (an index, constraint or view would be dropped with it
    at the contract), each listed index is on the column, and,
    when the enum exists already, its labels cover the mapping and (with `stop`) every value in
    the table. When an earlier create_enum of the step makes the type, the labels are checked by
    PostgreSQL as the conversion function is created, and the values by the backfill."""

    op: Literal["convert_to_enum"]
    table: TableName
    column: ColumnName
    type: TableName = Field(description="the enum type: existing, or made by an earlier create_enum of the step")
    mapping: dict[str, Label] = Field(default_factory=dict, description="legacy value -> the label it becomes")
    default_label: Label | None = Field(None, description="the label any other value becomes (its original is kept)")
    on_unmapped: Literal["stop", "null"] = Field(
        "stop", description="a value that is neither mapped nor a label: stop the backfill on its row, or NULL")
    not_null: bool = Field(False, description="the column is NOT NULL (checked): the enum column will be too")
    column_type: str = Field("text", description="the column's type now (checked): the rollback re-creates it")
    column_default: Label | None = Field(
        None, description="the column's DEFAULT, as the label it holds (checked): the enum column gets it")
    key: ColumnName = Field("id", description="a unique key column: originals are kept by it, the backfill batches by it")
    fold: bool = Field(False, description="fold case and surrounding spaces (lower(btrim(value))) before the mapping "
                                          "and the labels are looked up")
    indexes: Seq(RebuiltIndex) = Field((), description="the column's indexes, built again on the enum column")
    swap_sql: SwapSql | None = Field(None, description="statements run in the swap's transaction, with their "
                                                       "inverse for its rollback")

    @model_validator(mode="after")
    def _consistent(self) -> "ConvertToEnum":
        if self.default_label is not None and "on_unmapped" in self.model_fields_set:
            raise ValueError("give default_label (unmapped values become it) or on_unmapped, not both")
        if self.on_unmapped == "null" and self.not_null and self.default_label is None:
            raise ValueError("on_unmapped: null cannot hold in a NOT NULL column; map every value, or give "
                             "default_label")
        if self.key == self.column:
            raise ValueError(f"key {self.key!r} cannot be the converted column")
        type_name(self.column_type)
        if self.fold:
            unfolded = [k for k in self.mapping if k != k.strip().lower()]
            if unfolded:
                raise ValueError(f"with fold, mapping keys are matched folded: write {unfolded[0]!r} as "
                                 f"{unfolded[0].strip().lower()!r}")
        indexes_fit(self.indexes)
        for label in (*self.mapping.values(), self.default_label, self.column_default):
            if label is not None:
                label_fits(label)
        self._names()  # each generated name fits PostgreSQL's 63 bytes
        return self

    def _names(self) -> dict[str, str]:
        schema = self.table.rsplit(".", 1)[0] + "." if "." in self.table else ""
        bare, column = names.bare(self.table), self.column
        shadow = names.shadow(column)
        return {
            "shadow": shadow, "schema": schema,
            "trigger": names.sync_trigger(self.table, column),
            "sync": schema + names.sync_function(self.table, column),
            "convert": schema + names.fit(f"_rollout_convert_{bare}_{column}"),
            "originals": schema + names.fit(f"_rollout_originals_{bare}_{column}"),
            "converted": names.fit(f"_rollout_{bare}_{column}_converted"),
            "keep_not_null": names.not_null_check(self.table, column),
            "shadow_not_null": names.not_null_check(self.table, shadow),
            "rebuilt": names.old_column(column), "back": names.back_trigger(self.table, column),
        }

    def compile(self) -> Compiled:
        n = self._names()
        t, col, shadow, key, enum = (ident(self.table), ident(self.column), ident(n["shadow"]), ident(self.key),
                                     type_name(render(ident(self.type))))
        orig, convert = ident(n["originals"]), ident(n["convert"])
        alter = sql.SQL("ALTER TABLE {} ").format(t)

        # the conversion: mapped values, labels as themselves, and the rest as on_unmapped says
        value = self._folded(sql.SQL("$1"))
        label_of = sql.SQL("(SELECT l FROM unnest(enum_range(NULL::{e})) AS l WHERE l::text = {v})").format(
            e=enum, v=value)
        rest = (sql.SQL("coalesce({}, {}::{})").format(label_of, sql.Literal(self.default_label), enum)
                if self.default_label is not None else label_of if self.on_unmapped == "null"
                else sql.SQL("{}::{}").format(value, enum))
        cases = sql.SQL(" ").join(sql.SQL("WHEN {} THEN {}::{}").format(sql.Literal(k), sql.Literal(v), enum)
                                  for k, v in self.mapping.items())
        body = sql.SQL("SELECT CASE {} {} ELSE {} END").format(value, cases, rest) if self.mapping else \
            sql.SQL("SELECT {}").format(rest)
        create_convert = sql.SQL("CREATE FUNCTION {}(text) RETURNS {} LANGUAGE sql STABLE STRICT AS {}").format(
            convert, enum, dollar_quoted(body))

        create_sync, create_trigger = self._sync(n)
        drop_trigger = sql.SQL("DROP TRIGGER {} ON {}").format(ident(n["trigger"]), t)
        drop_sync = sql.SQL("DROP FUNCTION {}()").format(ident(n["sync"]))

        expand = Part("expand", EXPAND, (
            sql.SQL("CREATE TABLE {} (key text PRIMARY KEY, original {})").format(
                orig, type_name(self.column_type)),
            create_convert,
            alter + sql.SQL("ADD COLUMN {} {}").format(shadow, enum),
            create_sync,
            create_trigger,
        ), (
            drop_trigger, drop_sync,
            alter + sql.SQL("DROP COLUMN {}").format(shadow),
            sql.SQL("DROP FUNCTION {}(text)").format(convert),
            sql.SQL("DROP TABLE {}").format(orig),
        ))

        backfill = Backfill(
            name=_backfill_name(self.table, self.column), table=self.table, key=(self.key,),
            description=f"{literal_name(self.table)}.{literal_name(self.column)} into the enum column "
                        f"{literal_name(n['shadow'])}; originals that are not labels kept in {literal_name(n['originals'])}",
            sql=render(sql.SQL(
                "WITH converted AS (UPDATE {t} AS t SET {shadow} = {convert}(t.{col}) FROM batch "
                "WHERE t.{key} = batch.{key} RETURNING t.{key} AS k, t.{col} AS original, t.{shadow} AS label), "
                "saved AS (INSERT INTO {orig} (key, original) SELECT c.k::text, c.original FROM converted AS c "
                "WHERE c.original IS DISTINCT FROM c.label::text ON CONFLICT (key) DO UPDATE SET "
                "original = EXCLUDED.original) "
                "SELECT FROM converted").format(t=t, shadow=shadow, convert=convert, col=col, key=key, orig=orig)),
            where=render(sql.SQL("{} IS NULL AND {} IS NOT NULL").format(shadow, col)))

        # verification, true in both phases: before the contract every text value has its enum value
        row = sql.SQL("to_jsonb(t) ->> {}")
        expected = (sql.SQL(" AND ({} = ANY (ARRAY[{}]::text[] || enum_range(NULL::{})::text[]))").format(
            self._folded(row.format(sql.Literal(self.column))), sql.SQL(", ").join(map(sql.Literal, self.mapping)), enum)
            if self.on_unmapped == "null" and self.default_label is None else sql.SQL(""))
        unconverted = sql.SQL(
            "SELECT t.{key}, {value} AS value FROM {t} AS t WHERE {shadow_there} IS NOT NULL "
            "AND {value} IS NOT NULL AND {converted} IS NULL{expected}").format(
            key=key, t=t, value=row.format(sql.Literal(self.column)), converted=row.format(sql.Literal(n["shadow"])),
            shadow_there=sql.SQL("(SELECT attnum FROM pg_attribute WHERE attrelid = {} AND attname = {} "
                                 "AND NOT attisdropped)").format(regclass(self.table), sql.Literal(n["shadow"])),
            expected=expected)

        indexes = new_indexes(self.table, self.column, n["shadow"], self.indexes)
        converted = check(f"{names.bare(self.table)}_{self.column}_converted",
                          f"values of {self.column} without their enum value", unconverted)
        # a gate too: at every stage, what both applications wrote since has its enum value
        return Compiled((expand, *indexes, *self._contract(n, enum)), backfills=(backfill,), verify=(converted,),
                        gates=(converted,), preconditions=self._preconditions(enum))

    def _folded(self, value: sql.Composable) -> sql.Composable:
        return sql.SQL("lower(btrim({}))").format(value) if self.fold else value

    def _sync(self, n: dict) -> tuple[sql.Composable, sql.Composable]:
        """The trigger function and the trigger that convert what the applications write (the
        expand creates them; the swap's rollback creates them again)."""
        t, col, shadow, key = ident(self.table), ident(self.column), ident(n["shadow"]), ident(self.key)
        body = sql.SQL(
            "BEGIN\n"
            "    NEW.{shadow} := {convert}(NEW.{col});\n"
            "    IF NEW.{col} IS DISTINCT FROM NEW.{shadow}::text THEN\n"
            "        INSERT INTO {orig} (key, original) VALUES (NEW.{key}::text, NEW.{col})\n"
            "        ON CONFLICT (key) DO UPDATE SET original = EXCLUDED.original;\n"
            "    ELSE\n"
            "        DELETE FROM {orig} WHERE key = NEW.{key}::text;\n"
            "    END IF;\n"
            "    RETURN NEW;\n"
            "END").format(shadow=shadow, convert=ident(n["convert"]), col=col, orig=ident(n["originals"]), key=key)
        # SECURITY DEFINER with the search_path of its creation: the application's role needs no
        # grant on the originals table, and cannot redirect the names the body uses
        create_sync = sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                              "SET search_path FROM CURRENT AS {}").format(ident(n["sync"]), dollar_quoted(body))
        create_trigger = sql.SQL("CREATE TRIGGER {} BEFORE INSERT OR UPDATE OF {} ON {} FOR EACH ROW "
                                 "EXECUTE FUNCTION {}()").format(ident(n["trigger"]), col, t, ident(n["sync"]))
        return create_sync, create_trigger

    def _contract(self, n: dict, enum: sql.Composable) -> tuple[Part, ...]:
        t, col, shadow, key = ident(self.table), ident(self.column), ident(n["shadow"]), ident(self.key)
        alter = sql.SQL("ALTER TABLE {} ").format(t)
        parts: list[Part] = list(old_indexes(self.table, self.indexes))
        if self.not_null:
            # the enum column NOT NULL without a scan under ACCESS EXCLUSIVE (constraint_sql.set_not_null)
            parts += [replace(p, phase=CONTRACT) for p in set_not_null(self.table, n["shadow"]).parts]
            # the text column's NOT NULL, for the rollback after the contract: the swap's rollback adds
            # this CHECK NOT VALID, these two migrations' rollbacks validate it and set NOT NULL
            keep = ident(n["keep_not_null"])
            parts += [
                Part("keep_not_null", CONTRACT, (alter + sql.SQL("ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID")
                                                 .format(keep, col),),
                     (alter + sql.SQL("ALTER COLUMN {} SET NOT NULL").format(col),
                      alter + sql.SQL("DROP CONSTRAINT {}").format(keep))),
                Part("keep_not_null_validate", CONTRACT, (alter + sql.SQL("VALIDATE CONSTRAINT {}").format(keep),),
                     (alter + sql.SQL("VALIDATE CONSTRAINT {}").format(keep),)),
            ]
        elif self.on_unmapped == "stop" or self.default_label is not None:
            # proof that every text value was converted before the text column goes
            converted = ident(n["converted"])
            parts += [
                Part("converted_check", CONTRACT,
                     (alter + sql.SQL("ADD CONSTRAINT {} CHECK ({} IS NULL OR {} IS NOT NULL) NOT VALID").format(
                         converted, col, shadow),),
                     (alter + sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(converted),)),
                Part("converted_validate", CONTRACT, (alter + sql.SQL("VALIDATE CONSTRAINT {}").format(converted),)),
            ]
        trigger, sync, convert, orig = ident(n["trigger"]), ident(n["sync"]), ident(n["convert"]), ident(n["originals"])
        default = sql.Literal(self.column_default) if self.column_default is not None else None
        swap = [sql.SQL("DROP TRIGGER {} ON {}").format(trigger, t), sql.SQL("DROP FUNCTION {}()").format(sync),
                alter + sql.SQL("DROP COLUMN {}").format(col),
                alter + sql.SQL("RENAME COLUMN {} TO {}").format(shadow, col)]
        swap += index_renames(self.table, self.indexes)
        if default is not None:
            swap.append(alter + sql.SQL("ALTER COLUMN {} SET DEFAULT {}::{}").format(col, default, enum))
        swap_sql, swap_sql_back = self.swap_sql.undoable() if self.swap_sql is not None else ((), ())
        swap += swap_sql
        # the text column comes back as it was: the original where one was kept, else the label
        rebuilt = column_back(self.table, self.column, self.column_type, lambda row: sql.SQL(
            "coalesce((SELECT o.original FROM {orig} AS o WHERE o.key = {row}.{key}::text "
            "AND {convert}(o.original) IS NOT DISTINCT FROM {row}.{col}), {row}.{col}::text)").format(
            orig=orig, row=row, key=key, convert=convert, col=col), (self.key,), self.column)
        back = list(index_renames(self.table, self.indexes, back=True))
        back += [alter + sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(col)] if default is not None else []
        back += [alter + sql.SQL("RENAME COLUMN {} TO {}").format(col, shadow), *rebuilt.swap_in]
        if default is not None:
            back.append(alter + sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(col, default))
        back += self._sync(n)
        if self.not_null:
            back.append(alter + sql.SQL("ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID").format(
                ident(n["keep_not_null"]), col))
        back += swap_sql_back  # last: the old shape is back, which its statements may name
        reason = (f"convert_to_enum: the enum column takes the name {self.column} in the transaction that drops the "
                  "text column (and gives it back on rollback), so readers keep the name")
        return (*parts, Part("swap", CONTRACT, tuple(swap), tuple(back), restore=rebuilt.restore,
                             allows=(Allowance(rule="renaming-column", reason=reason),)))

    def _preconditions(self, enum: sql.Composable) -> tuple:
        rel, col, typ = regclass(self.table), sql.Literal(self.column), regtype(self.type)
        declared = sql.Literal(self.column_type)
        if self.column_default is None:
            wrong_default = sql.SQL("c.dflt IS NOT NULL")
        else:  # PostgreSQL prints a text default as 'label'::text (or ::character varying)
            quoted = sql.SQL("quote_literal({})").format(sql.Literal(self.column_default))
            wrong_default = sql.SQL("c.dflt IS NULL OR left(c.dflt, length({q}) + 2) <> {q} || '::'").format(q=quoted)
        shape = sql.SQL(
            "WITH c AS (SELECT a.attnum, a.atttypid, a.attnotnull, pg_get_expr(d.adbin, d.adrelid) AS dflt "
            "FROM pg_attribute AS a LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = {rel} AND a.attname = {col} AND a.attnum > 0 AND NOT a.attisdropped) "
            "SELECT format('no column %s in %s', {col}, {table}) AS problem WHERE NOT EXISTS (SELECT FROM c) "
            "UNION ALL SELECT format('the column is %s, and column_type says %s', format_type(c.atttypid, NULL), "
            "{declared}) FROM c WHERE c.atttypid IS DISTINCT FROM to_regtype({declared}) "
            "UNION ALL SELECT format('the column is %s, and not_null says %s', CASE WHEN c.attnotnull THEN 'NOT NULL' "
            "ELSE 'nullable' END, {not_null}::text) FROM c WHERE c.attnotnull <> {not_null} "
            "UNION ALL SELECT format('the column''s default is %s, and column_default says %s', "
            "coalesce(c.dflt, 'none'), {default}) FROM c WHERE {wrong_default} "
            "UNION ALL SELECT format('%s depends on the column: the contract drops the column, and convert_to_enum "
            "carries nothing over (drop it first, recreate it on the enum column after)', "
            "pg_describe_object(p.classid, p.objid, p.objsubid)) FROM c JOIN pg_depend AS p ON p.refclassid = "
            "'pg_class'::regclass AND p.refobjid = {rel} AND p.refobjsubid = c.attnum AND p.classid <> "
            "'pg_attrdef'::regclass AND p.deptype IN ('n', 'a') AND NOT EXISTS (SELECT FROM pg_constraint AS k "
            "WHERE p.classid = 'pg_constraint'::regclass AND k.oid = p.objid AND k.contype = 'n') "
            "AND NOT EXISTS (SELECT FROM pg_class AS x WHERE p.classid = 'pg_class'::regclass AND x.oid = p.objid "
            "AND x.relkind = 'i' AND x.relname = ANY ({listed})) "
            "UNION ALL SELECT format('listed index %s is not an index on the column', l) FROM unnest({listed}) AS l "
            "WHERE {rel} IS NOT NULL AND NOT EXISTS (SELECT FROM pg_index AS i JOIN pg_class AS x ON x.oid = "
            "i.indexrelid JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) "
            "WHERE i.indrelid = {rel} AND x.relname = l AND a.attname = {col}) "
            "UNION ALL SELECT format('key %s is not a unique key of %s', {key}, {table}) WHERE {rel} IS NOT NULL AND "
            "NOT EXISTS (SELECT FROM pg_index AS i JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND "
            "a.attnum = i.indkey[0] WHERE i.indrelid = {rel} AND i.indisunique AND i.indisvalid AND i.indnatts = 1 "
            "AND i.indpred IS NULL AND a.attname = {key}) "
            "UNION ALL SELECT format('%s is not an enum type', {typ}) WHERE {typ} IS NOT NULL AND "
            "NOT EXISTS (SELECT FROM pg_type WHERE oid = {typ} AND typtype = 'e')").format(
            rel=rel, col=col, table=sql.Literal(self.table), declared=declared, not_null=sql.SQL("true" if self.not_null else "false"),
            default=sql.Literal(self.column_default or "none"), wrong_default=wrong_default,
            key=sql.Literal(self.key), typ=typ, listed=sql.SQL("ARRAY[{}]::name[]").format(
                sql.SQL(", ").join(sql.Literal(i.name) for i in self.indexes)))
        labels = [*self.mapping.values(), self.default_label, self.column_default]
        missing = sql.SQL(
            "SELECT DISTINCT l AS label FROM unnest(ARRAY[{}]::text[]) AS l WHERE {typ} IS NOT NULL "
            "AND l IS NOT NULL AND NOT EXISTS (SELECT FROM pg_enum WHERE enumtypid = {typ} AND enumlabel = l)").format(
            sql.SQL(", ").join(map(sql.Literal, labels)), typ=typ)
        checks = [check(f"{names.bare(self.table)}_{self.column}_as_declared", f"where {literal_name(self.table)}.{literal_name(self.column)} "
                        "is not as the operation declares it", shape),
                  check(f"{names.bare(self.table)}_{self.column}_labels_exist", f"labels the conversion names that {self.type} lacks", missing)]
        if self.on_unmapped == "stop" and self.default_label is None:
            unmapped = sql.SQL(
                "SELECT {col}::text AS value, count(*) AS rows FROM {t} WHERE {typ} IS NOT NULL AND {col} IS NOT NULL "
                "AND {value} <> ALL (ARRAY[{keys}]::text[]) AND NOT EXISTS (SELECT FROM pg_enum "
                "WHERE enumtypid = {typ} AND enumlabel = {value}) GROUP BY {col} ORDER BY 1").format(
                col=ident(self.column), t=ident(self.table), typ=typ,
                value=self._folded(sql.SQL("{}::text").format(ident(self.column))),
                keys=sql.SQL(", ").join(map(sql.Literal, self.mapping)))
            checks.append(check(f"{names.bare(self.table)}_{self.column}_values_mapped", "values neither mapped nor labels of "
                                f"{self.type} (they would stop the backfill)", unmapped))
        return tuple(checks)


def _backfill_name(table: str, column: str) -> str:
    """A backfill's name is lowercase (NAME_PATTERN); the table's may not be."""
    return re.sub(r"[^a-z0-9_]+", "_", f"convert_{names.bare(table)}_{column}".lower())[:63]
