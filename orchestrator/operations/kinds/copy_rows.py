"""copy_rows: a table filled from another, in batches, while the application starts writing it.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from pydantic import Field, model_validator

from ...plan_parts import Backfill, ColumnName, Name, Seq, TableName, _Model
from .. import names
from ..base import CONTRACT, EXPAND, Compiled, Operation, Part, check
from ..column_sql import job_label, row_trigger
from ..sql import expr, ident, literal_name, render


class DualWrite(_Model):
    """The application writes the target rows itself behind a flag: from each stage on, the
    source rows written since the flag last moved, in subjects where it is on, must have theirs."""

    flag: Name = Field(description="the flag behind which the application writes both tables")
    subject: str = Field(description="an SQL expression over a source row: the subject the flag is asked about")
    since: str = Field(description="an SQL expression over a source row: when it was written")


class CopyRows(Operation):
    """Rows of a new table made from the rows another table holds (a table split out, a
    denormalised copy), by a backfill that survives crashes, and verified.

    SQL: expand creates an AFTER INSERT row trigger on `from`, `_rollout_copy_<from>_<into>`
    (its function SECURITY DEFINER: the old application's role needs no grant on `into`), that copies each row the application inserts (matching `where`) into `into`, ON CONFLICT
    (unique) DO NOTHING: every such row without `dual_write`; with it, those in subjects where
    the flag is off (where it is on, the application writes the copy itself). So no row written
    during or after the backfill is left without its copy, whichever version wrote it. Around a
    flag change the application and the trigger may both write a copy: write yours with ON
    CONFLICT DO NOTHING. The contract drops the trigger (its rollback brings it back). The
    backfill visits `from` in key-range batches (by `key`) and, in each
    batch's transaction, runs `INSERT INTO into (columns) SELECT <expressions> FROM from JOIN
    batch USING (key) ON CONFLICT (unique) DO NOTHING` (the batch holds the rows `where`
    selects): a row already there (the application's, or a batch redone after a crash) is
    kept, so every source row is copied once. `columns` maps each target column to an SQL expression over the source row.

    Locks: the trigger's creation and drop take SHARE ROW EXCLUSIVE on the source for a moment;
    the backfill ROW EXCLUSIVE on the target and ACCESS SHARE on the source, one batch at a time.

    Both versions: the old application writes only the source; the new one (behind `dual_write`'s
    flag) writes both. Verification, after the backfill: every source row matching `where` has a
    target row with the same `unique` values, NULLs matching NULLs (`<from>_rows_copied`). A
    NULL among the `unique` values never conflicts (unless the index is NULLS NOT DISTINCT): such
    a row the application wrote during the backfill is copied a second time. With `dual_write`,
    every stage of the step's rollout, and its contract, holds only while the source rows written
    since the flag last moved (`since`), in subjects where it is on (`subject`), have theirs
    (`<from>_new_rows_copied`: each is looked up in the target's unique index, so the check,
    asked again at every interval of `advance --watch`, does not read the whole target).

    Rollback: the trigger is dropped; the rows stay in the target (the step that made the table
    drops it).
    """

    op: Literal["copy_rows"]
    from_: TableName = Field(alias="from", description="the table whose rows are copied")
    into: TableName = Field(description="the table they are copied into")
    columns: dict[ColumnName, str] = Field(description="target column -> an SQL expression over the source row")
    unique: Seq(ColumnName) = Field(description="target columns of a unique index or constraint: a row whose values "
                                                "are there already is not copied again")
    where: str | None = Field(None, description="an SQL condition over the source row: the rows to copy (default all)")
    key: Seq(ColumnName) = Field(("id",), description="the source's unique, indexed columns the backfill batches by")
    dual_write: DualWrite | None = Field(None, description="the flag behind which the application writes the target "
                                                           "rows itself: {flag, subject, since}")

    @model_validator(mode="after")
    def _valid(self) -> "CopyRows":
        if not self.columns:
            raise ValueError("columns needs at least one target column")
        missing = [c for c in self.unique if c not in self.columns]
        if not self.unique or missing:
            raise ValueError("unique names target columns that columns fills" +
                             (f" ({', '.join(missing)} is not among them)" if missing else ""))
        for text in (*self.columns.values(), self.where,
                     *((self.dual_write.subject, self.dual_write.since) if self.dual_write else ())):
            if text is not None:
                expr(text)
        if not self.key:
            raise ValueError("key needs at least one column")
        names.fit(self.trigger_name)
        return self

    @property
    def trigger_name(self) -> str:
        return f"_rollout_copy_{names.bare(self.from_)}_{names.bare(self.into)}"

    def flags_used(self) -> tuple[str, ...]:
        return (self.dual_write.flag,) if self.dual_write else ()

    def compile(self) -> Compiled:
        source, bare = ident(self.from_), names.bare(self.from_)
        where = self._selected()
        # the batch holds the keys of the rows `where` selects: the engine adds it to the batch's query
        copy = self._insert(sql.SQL("{} AS {} JOIN batch USING ({})").format(
            source, ident(bare), sql.SQL(", ").join(map(ident, self.key))))
        job = Backfill(name=job_label("copy", bare, "into", names.bare(self.into)), table=self.from_,
                       key=self.key, sql=render(copy), where=self.where,
                       description=f"rows of {literal_name(self.from_)} copied into {literal_name(self.into)}")
        verify = check(f"{bare}_rows_copied", f"rows of {literal_name(self.from_)} without their row in "
                       f"{literal_name(self.into)}", self._uncopied(where))
        gates = ()
        if self.dual_write is not None:
            recent = sql.SQL("{} AND {} AND ({}) > (SELECT rollout.flag_changed_at({}))").format(
                where, self._flag_on(), expr(self.dual_write.since), sql.Literal(self.dual_write.flag))
            gates = (check(f"{bare}_new_rows_copied", f"rows of {literal_name(self.from_)} written since "
                           f"{self.dual_write.flag} last moved, where it is on, without their row in "
                           f"{literal_name(self.into)}", self._without_copy(recent)),)
        return Compiled(parts=self._copy_trigger(), backfills=(job,), verify=(verify,), gates=gates)

    def _insert(self, rows: sql.Composable, where: sql.Composable | None = None) -> sql.Composable:
        """The copies of the source rows `rows` (a FROM item aliased as the source) where `where` holds."""
        return sql.SQL("INSERT INTO {into} ({columns}) SELECT {values} FROM {rows}{where} "
                       "ON CONFLICT ({unique}) DO NOTHING").format(
            into=ident(self.into), columns=sql.SQL(", ").join(map(ident, self.columns)),
            values=sql.SQL(", ").join(sql.SQL("({})").format(expr(e)) for e in self.columns.values()),
            rows=rows, where=sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""),
            unique=sql.SQL(", ").join(map(ident, self.unique)))

    def _copy_trigger(self) -> tuple[Part, ...]:
        """The trigger that copies the rows the application inserts from expand to contract: all
        of them, or with `dual_write` those in subjects where the flag is off. It runs as its
        owner: the old application's role may have no grant on the target."""
        wanted = self._selected()
        if self.dual_write is not None:
            wanted = sql.SQL("{} AND NOT {}").format(wanted, self._flag_on())
        row = sql.SQL("(SELECT NEW.*) AS {}").format(ident(names.bare(self.from_)))
        create, drop = row_trigger(self.from_, self.trigger_name, "AFTER INSERT",
                                   sql.SQL("    {};").format(self._insert(row, wanted)), definer=True)
        return Part("copy_trigger", EXPAND, create, drop), Part("drop_copy_trigger", CONTRACT, drop, create)

    def _flag_on(self) -> sql.Composable:
        """Whether `dual_write`'s flag is on for a source row's subject: the application writes its copy."""
        return sql.SQL("rollout.is_enabled({}, ({})::text)").format(sql.Literal(self.dual_write.flag),
                                                                    expr(self.dual_write.subject))

    def _selected(self) -> sql.Composable:
        """`where` over a source row, parenthesised (true when the operation copies every row)."""
        return sql.SQL("({})").format(expr(self.where)) if self.where else sql.SQL("true")

    def _uncopied(self, where: sql.Composable) -> sql.Composable:
        """The `unique` values of the source rows matching `where` that the target lacks. EXCEPT
        compares them as PostgreSQL compares rows for DISTINCT (two NULLs are the same value) and
        hashes each side once, where a NOT EXISTS on IS NOT DISTINCT FROM could use no index:
        the verification's, after a backfill over the whole table."""
        return sql.SQL("{keys} EXCEPT SELECT {unique} FROM {into}").format(
            keys=self._keys(where), unique=sql.SQL(", ").join(map(ident, self.unique)), into=ident(self.into))

    def _without_copy(self, where: sql.Composable) -> sql.Composable:
        """What `_uncopied` finds, for a few source rows (those written since the flag moved):
        each row is looked up in the target's unique index, so a stage check does not read the
        whole target; only a row with a NULL among its values, which no index lookup matches, is
        compared NULL-safely with every target row."""
        columns = [ident(c) for c in self.unique]
        def joined(operator: str) -> sql.Composable:
            return sql.SQL(" AND ").join(sql.SQL("t.{0} " + operator + " r.{0}").format(c) for c in columns)
        return sql.SQL(
            "SELECT * FROM ({keys}) AS r WHERE NOT EXISTS (SELECT FROM {into} AS t WHERE {equal}) "
            "AND (num_nulls({listed}) = 0 OR NOT EXISTS (SELECT FROM {into} AS t WHERE {same}))").format(
            keys=self._keys(where), into=ident(self.into), equal=joined("="),
            listed=sql.SQL(", ").join(sql.SQL("r.{}").format(c) for c in columns), same=joined("IS NOT DISTINCT FROM"))

    def _keys(self, where: sql.Composable) -> sql.Composable:
        """The `unique` values the source rows matching `where` are copied with."""
        return sql.SQL("SELECT {values} FROM {source} AS {alias} WHERE {where}").format(
            values=sql.SQL(", ").join(sql.SQL("({}) AS {}").format(expr(self.columns[c]), ident(c)) for c in self.unique),
            source=ident(self.from_), alias=ident(names.bare(self.from_)), where=where)
