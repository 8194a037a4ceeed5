"""A Parquet table described through pyarrow (no pandas, no torch): :func:`describe_parquet`.

The schema gives the columns and their types; only the categorical columns (for
their vocabularies) and the label (for its classes) are read. Null counts come
from the file's column statistics. A Parquet file has no lines: a diagnostic
names the column and the row.
"""

from __future__ import annotations

from typing import Any

from dsl.data.files import DataError
from dsl.data.tables import TableInfo, check_columns, label_classes, label_problem


def _open(path: str) -> Any:
    import pyarrow.parquet as pq

    from dsl.data.checks import open_data  # a regular file of bounded size, never a FIFO waited on

    try:
        return pq.ParquetFile(open_data(path))
    except Exception as exc:  # pyarrow raises its own error types for every kind of damage
        raise DataError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {exc})", path) from None


def numeric_type(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
                or pa.types.is_decimal(t))


def describe_parquet(path: str, label: str, categorical: tuple[str, ...], classes: int | None) -> TableInfo:
    pf = _open(path)
    schema = pf.schema_arrow
    names = list(schema.names)
    check_columns(names, label, categorical, path)
    if pf.metadata.num_rows == 0:
        raise DataError(f"{path} has no rows", path)
    numeric = []
    for name in names:
        t = schema.field(name).type
        if name in categorical:
            continue
        if not numeric_type(t):
            what = "label" if name == label else "column"
            raise DataError(f"{what} `{name}` of {path} holds {t} values, not numbers; declare it with "
                            f'categorical=["{name}"] if it holds categories', path)
        nulls = _nulls(pf, names.index(name))
        if nulls:
            raise DataError(f"column `{name}` of {path} has {nulls} missing values; every numeric cell needs a "
                            "number", path)
        if name != label:
            numeric.append(name)
    vocab = {c: categories(read_column(pf, c, path)) for c in categorical if c in names}
    if label in vocab:
        n_y = len(vocab[label])
    elif label not in names:  # inputs to predict on, without their label
        n_y = 0
    else:
        n_y = label_classes(label, _check_labels(read_column(pf, label, path), label, classes, path), classes)
    return TableInfo(path, tuple(numeric), vocab, label, n_y, pf.metadata.num_rows)


def _nulls(pf: Any, index: int) -> int:
    total = 0
    for g in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(g).column(index).statistics
        if stats is not None and stats.has_null_count:
            total += stats.null_count
    return total


def read_column(pf: Any, name: str, path: str) -> Any:
    try:
        return pf.read(columns=[name]).column(0)
    except Exception as exc:
        raise DataError(f"cannot read column `{name}` of {path} ({type(exc).__name__}: {exc})", path) from None


def text_values(column: Any) -> list[str]:
    """A column's values as text, as :func:`categories` spells them (missing: the empty text)."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return ["" if v is None else v for v in column.cast(pa.string()).to_pylist()]


def categories(column: Any) -> tuple[str, ...]:
    """A column's distinct values as text, sorted; a missing value is the empty text.

    (Only arrow compute here: filling nulls with a Python "" would make pyarrow import pandas.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return tuple(sorted({"" if v is None else v for v in pc.unique(column.cast(pa.string())).to_pylist()}))


def _check_labels(column: Any, label: str, classes: int | None, path: str) -> int:
    """The largest label; DataError naming the first row whose label is no class number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    low, high = (v.as_py() for v in pc.min_max(column).values())
    whole = pa.types.is_integer(column.type) or pa.types.is_boolean(column.type) or bool(
        pc.all(pc.equal(column, pc.floor(column))).as_py())
    fine = column.null_count == 0 and whole and low >= 0 and (classes is None or high < classes)
    if fine:
        return int(high)
    for row, v in enumerate(column.to_pylist()):  # find the first bad row for the message
        problem = "a missing label" if v is None else label_problem(float(v), label, classes)
        if problem is not None:
            raise DataError(f"row {row} of {path}: {problem}", path)
    return int(high)
