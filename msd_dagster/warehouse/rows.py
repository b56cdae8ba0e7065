"""DataFrame chunks as the values drivers take: shared by every backend's bulk path.

Values: NaN / NA / NaT become NULL; integers, floats, text and timestamps are converted to the
column's Python type column by column (vectorized), never formatted through ``str(float)``.
Frames are processed in chunks, so memory stays bounded by the chunk size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa


class BulkInsertError(RuntimeError):
    """The database accepted fewer rows than sent, or reported data warnings."""


# --------------------------------------------------------------------------------------------
# DataFrame -> column values


@dataclass(frozen=True)
class ColumnData:
    """One column of a chunk, normalized for its SQL type.

    ``values``: float64, int64, object (str) or datetime64[us]; ``mask``: True where NULL
    (``None`` when nothing is NULL).
    """

    name: str
    kind: str
    values: np.ndarray
    mask: np.ndarray | None

    def objects(self) -> np.ndarray:
        """Native Python values (float, int, str, datetime) with None for NULL."""
        # astype(object): numpy scalars -> Python float / int / datetime
        out = self.values if self.kind == "text" else self.values.astype(object)
        if self.mask is not None:
            if out is self.values:
                out = out.copy()
            out[self.mask] = None
        return out

    def arrow(self) -> Any:
        import pyarrow as pa

        if self.kind == "text":
            return pa.array(self.objects(), type=pa.string())
        arrow_type = {
            "float": pa.float64(),
            "int": pa.int64(),
            "datetime": pa.timestamp("us"),
        }[self.kind]
        return pa.array(self.values, type=arrow_type, mask=self.mask)


def column_kind(column: sa.Column) -> str:
    """float / int / text / datetime, from the column's SQL type."""
    type_ = column.type
    if isinstance(type_, sa.Float):
        return "float"
    if isinstance(type_, sa.Integer):
        return "int"
    if isinstance(type_, sa.String):
        return "text"
    if isinstance(type_, sa.DateTime):
        return "datetime"
    raise TypeError(f"column {column.table.name}.{column.name}: unsupported type {type_!r}")


def _none_if_empty(mask: np.ndarray) -> np.ndarray | None:
    return mask if mask.any() else None


def normalize_column(series: pd.Series, column: sa.Column) -> ColumnData:
    """Convert one pandas column to the representation of :class:`ColumnData`."""
    kind = column_kind(column)
    where = f"{column.table.name}.{column.name}"
    if kind == "float":
        try:
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: values are not numbers ({exc})") from None
        return ColumnData(column.name, kind, values, _none_if_empty(np.isnan(values)))
    if kind == "int":
        if pd.api.types.is_integer_dtype(series.dtype):  # numpy int or nullable Int32/Int64
            mask = series.isna().to_numpy()
            values = series.to_numpy(dtype=np.int64, na_value=0)
            return ColumnData(column.name, kind, values, _none_if_empty(mask))
        # float (NaN forced the dtype) or object: integral values only, never truncated.
        mask = series.isna().to_numpy()
        try:
            as_float = series.to_numpy(dtype=np.float64, na_value=0.0)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}: values are not integers ({exc})") from None
        if not np.array_equal(as_float, np.trunc(as_float)):
            raise ValueError(f"{where}: non-integral values in an integer column")
        return ColumnData(column.name, kind, as_float.astype(np.int64), _none_if_empty(mask))
    if kind == "text":
        mask = series.isna().to_numpy()
        if mask.all():  # an all-missing column may have any dtype (often float64 NaN)
            return ColumnData(column.name, kind, np.full(len(series), None, dtype=object), None)
        if not isinstance(series.dtype, pd.StringDtype):
            inferred = pd.api.types.infer_dtype(series, skipna=True)
            if inferred not in ("string", "empty"):
                raise TypeError(
                    f"{where}: expected text, found {inferred} values (decode bytes to str first)"
                )
        values = series.to_numpy(dtype=object)
        return ColumnData(column.name, kind, values, _none_if_empty(mask))
    # datetime: naive UTC, microsecond precision (what every dialect's column stores).
    if not pd.api.types.is_datetime64_any_dtype(series.dtype):
        series = pd.to_datetime(series)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy(dtype="datetime64[us]")
    return ColumnData(column.name, kind, values, _none_if_empty(np.isnat(values)))


def insert_columns(table: sa.Table, df: pd.DataFrame) -> list[sa.Column]:
    """The columns written for ``table`` (all but the identity key), checked against ``df``."""
    columns = [c for c in table.columns if c.identity is None]
    names = {c.name for c in columns}
    missing = sorted(names - set(df.columns))
    extra = sorted(set(map(str, df.columns)) - names)
    if missing or extra:
        raise ValueError(
            f"frame for {table.name} does not match its columns: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    return columns


def normalize_chunk(chunk: pd.DataFrame, columns: Sequence[sa.Column]) -> list[ColumnData]:
    return [normalize_column(chunk[c.name], c) for c in columns]


def _float_processor() -> Any:
    from sqlalchemy.engine import processors

    return getattr(processors, "to_float", None)


_TO_FLOAT = _float_processor()


def rows_of(
    data: Sequence[ColumnData], processors: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    """Row tuples of native Python values; ``processors`` are SQLAlchemy bind processors."""
    arrays = []
    for i, col in enumerate(data):
        proc = processors[i] if processors else None
        if col.kind in ("float", "int") and (
            proc is None or (proc is _TO_FLOAT and col.kind == "float")
        ):
            # tolist(): the same Python floats / ints as astype(object), in one C loop; the
            # float processor would return each value unchanged, so it is skipped.
            objs = col.values.tolist()
            if col.mask is not None:
                for j in np.flatnonzero(col.mask).tolist():
                    objs[j] = None
        else:
            objs = col.objects()
            if proc is not None:
                objs = [None if v is None else proc(v) for v in objs]
        arrays.append(objs)
    return list(zip(*arrays, strict=True))


def iter_chunks(df: pd.DataFrame, chunk_rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(df), chunk_rows):
        yield df.iloc[start : start + chunk_rows]


def row_batches(
    df: pd.DataFrame,
    columns: Sequence[sa.Column],
    chunk_rows: int,
    dialect: sa.Dialect | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """``df`` as lists of at most ``chunk_rows`` row tuples, bound for ``dialect`` (if given)."""
    processors = _processors(columns, dialect) if dialect is not None else None
    for chunk in iter_chunks(df, chunk_rows):
        yield rows_of(normalize_chunk(chunk, columns), processors)


@contextlib.contextmanager
def driver_errors(conn: sa.Connection, statement: str) -> Iterator[None]:
    """Raise driver errors of raw-cursor work (COPY, fast_executemany) as SQLAlchemy errors.

    Callers then see ``sqlalchemy.exc.IntegrityError`` / ``OperationalError`` ... whatever the
    path, and a connection the server killed is invalidated instead of going back to the pool.
    """
    dialect = conn.dialect
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        invalidated = False
        with contextlib.suppress(Exception):
            if dialect.is_disconnect(exc, conn.connection.dbapi_connection, None):
                conn.invalidate(exc)
                invalidated = True
        raise sa.exc.DBAPIError.instance(
            statement,
            None,
            exc,
            dialect.loaded_dbapi.Error,
            connection_invalidated=invalidated,
            dialect=dialect,
        ) from exc


def _processors(columns: Sequence[sa.Column], dialect: sa.Dialect) -> list[Any]:
    return [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]


def qualified_name(dialect: sa.Dialect, table: sa.Table) -> str:
    """The quoted, schema-qualified name of ``table`` for hand-written SQL (COPY, MERGE ...)."""
    prep = dialect.identifier_preparer
    name = prep.quote(table.name)
    return f"{prep.quote_schema(table.schema)}.{name}" if table.schema else name


def insert_sql(
    dialect: sa.Dialect,
    table: sa.Table,
    columns: Sequence[sa.Column],
    rows: int = 1,
    *,
    marker: str = "?",
) -> str:
    """``INSERT INTO t (c1, ...) VALUES (?, ...)[, (...)]`` with the driver's ``marker``."""
    prep = dialect.identifier_preparer
    marks = "(" + ", ".join([marker] * len(columns)) + ")"
    names = ", ".join(prep.quote(c.name) for c in columns)
    return f"INSERT INTO {qualified_name(dialect, table)} ({names}) VALUES " + ", ".join(
        [marks] * rows
    )
