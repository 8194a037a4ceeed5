"""``table(path, label="y", categorical=[...])``: the rows of a CSV or Parquet file.

Declared without torch or pandas, so ``dsl check`` proves the model fits the
file: a CSV's header and cells are read with Python's ``csv`` module, a
Parquet file's schema (and its categorical columns) with pyarrow. The fields:

* ``x: [B, F] float``: every numeric column but the label, in file order
  (standardised with the training split's statistics unless ``standardize=false``);
* one ``[B] long`` field per categorical column, named after it, holding each
  row's index into the column's vocabulary (its distinct values as text,
  sorted; a missing value is the empty text), with the vocabulary's size
  declared as ``N_<column>``, a constant the model can use
  (``Embedding(color, num=N_color, dim=4)``);
* ``y: [B] long``: the label column, class numbers 0, 1, 2, ... (``classes=K``
  refuses any outside 0..K-1), or text when the label is listed in
  ``categorical``; the number of classes is declared as ``N_y``.

A value that is not a number in a column not declared categorical, a missing
or non-finite number, a label outside the classes and a ragged row are
diagnostics (E0703) at the file's line and column (a Parquet file: the column
and row in the message). Loading (pandas, then tensors) is
:mod:`dsl.data.table_load`.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from dsl.data.checks import check_rows
from dsl.data.files import (
    DataError,
    _csv_fields,
    _field_cols,
    _quoted_cols,
    resolve_path,
    text_lines,
)
from dsl.data.params import SplitParams
from dsl.data.registry import Source, register_source
from dsl.language.diagnostics import did_you_mean
from dsl.language.reserved import NOT_INPUT_NAMES, RESERVED_WORDS
from dsl.language.shapes import Sym, TensorType

SUFFIXES = (".csv", ".parquet", ".pq")
RESERVED = ("x", "y", "batch")  # field names a categorical column cannot take


class TableParams(SplitParams):
    path: str = Field(description="a .csv or .parquet file with a header of column names")
    label: str = Field("y", description="the label column (field `y`)")
    categorical: list[str] = Field(default_factory=list, description="columns of categories: [B] long fields")
    classes: int | None = Field(None, ge=2, description="labels must be 0..classes-1 (default: up to the largest)")
    standardize: bool = Field(True, description="scale x with the training split's statistics")

    @field_validator("path")
    @classmethod
    def _suffix(cls, v: str) -> str:
        if not v.lower().endswith(SUFFIXES):
            raise ValueError("table() reads a .csv or a .parquet file")
        return v


@dataclass(frozen=True)
class TableInfo:
    """What ``dsl check`` learns of a table file: its columns by role and its vocabularies."""

    path: str
    numeric: tuple[str, ...]  # the columns of x, in file order
    vocab: dict[str, tuple[str, ...]]  # categorical column -> its sorted distinct values
    label: str
    classes: int  # N_y
    rows: int

    def fields(self) -> dict[str, TensorType]:
        b = Sym("B")
        out: dict[str, TensorType] = {}
        if self.numeric:
            out["x"] = TensorType((b, len(self.numeric)), "float")
        for name in self.vocab:
            if name != self.label:
                out[name] = TensorType((b,), "long")
        out["y"] = TensorType((b,), "long")
        return out

    def sizes(self) -> dict[str, int]:
        return {f"N_{field}": n for field, n in self.ranges().items()}

    def ranges(self) -> dict[str, int]:
        """Each integer field's values lie below: a category's vocabulary size, y's classes."""
        out = {name: len(v) for name, v in self.vocab.items() if name != self.label}
        out["y"] = self.classes
        return out


def describe(p: TableParams, path: str | None = None, labelled: bool = True) -> TableInfo:
    """The table's columns and vocabularies; DataError (E0703) with a position when the file is unfit.

    ``path``: another file with the same columns (``dsl predict``'s inputs), where the label
    may be missing unless ``labelled``."""
    path = path or resolve_path(p)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(path) from None
    label = p.label if labelled else Unlabelled(p.label)
    return _describe(path, st.st_mtime_ns, st.st_size, label, tuple(p.categorical), p.classes)


class Unlabelled(str):
    """A label column name that a file may lack (inputs to predict on)."""


@functools.lru_cache(maxsize=16)
def _describe(path: str, mtime: int, size: int, label: str, categorical: tuple[str, ...],
              classes: int | None) -> TableInfo:
    del mtime, size  # part of the cache key only: a changed file is read again
    if path.lower().endswith(".csv"):
        return _scan_csv(path, label, categorical, classes)
    from dsl.data.parquet import describe_parquet

    return describe_parquet(path, label, categorical, classes)


def check_columns(names: list[str], label: str, categorical: tuple[str, ...], path: str,
                  where: Any = None) -> None:
    """The header has the label and every categorical column, each usable as a field name."""
    at = where or (lambda i: (path, 1, 1))
    for i, n in enumerate(names):
        if n in names[:i]:
            raise DataError(f"column `{n}` appears twice in the header", *at(i))
    needed = [c for c in categorical if c != label] if isinstance(label, Unlabelled) else [label, *categorical]
    missing = [c for c in needed if c not in names]
    if missing:
        hint = did_you_mean(missing[0], names)
        raise DataError(f"no column {', '.join(f'`{m}`' for m in missing)} in {path} "
                        f"(columns: {', '.join(names)}){'; ' + hint if hint else ''}", *at(0))
    for c in categorical:
        if c != label and (not c.isidentifier() or c in RESERVED or c in NOT_INPUT_NAMES or c in RESERVED_WORDS):
            raise DataError(f"categorical column `{c}` becomes a field of that name, which a model input must "
                            f"take, so it must be an identifier other than {', '.join(RESERVED)}, a Python "
                            "keyword or a word of the language; rename the column", *at(names.index(c)))


def label_classes(label: str, largest: int, classes: int | None) -> int:
    return classes if classes is not None else max(largest + 1, 2)


def label_problem(value: float, label: str, classes: int | None) -> str | None:
    """Why ``value`` is no class number (None when it is one)."""
    if value != int(value) or value < 0:
        return (f"label column `{label}` holds {value:g}; labels are class numbers 0, 1, 2, ... "
                f"(or text: list `{label}` in categorical=[...])")
    if classes is not None and value >= classes:
        return f"label column `{label}` holds {int(value)}, outside the classes 0..{classes - 1} (classes={classes})"
    return None


# --------------------------------------------------------------------------- CSV


def _scan_csv(path: str, label: str, categorical: tuple[str, ...], classes: int | None) -> TableInfo:
    """Read every cell of a CSV once (pure Python): roles, vocabularies, and the first bad cell."""
    with text_lines(path) as lines:
        header_line = next(lines, "").rstrip("\r\n")
        if "\r" in header_line:
            raise DataError(f"{path} ends its lines with a lone carriage return (\\r); CSV lines end in \\n or "
                            "\\r\\n", path, 1, header_line.index("\r") + 1)
        names = [h.strip() for h in _csv_fields(header_line, path, 1)]
        if not names or names == [""]:
            raise DataError(f"{path} has no header row of column names", path, 1, 1)
        cols = _field_cols(header_line)
        check_columns(names, label, categorical, path, lambda i: (path, 1, cols[min(i, len(cols) - 1)]))
        scan = _Scan(names, label, categorical, classes, path)
        for number, raw in enumerate(lines, start=2):
            line = raw.rstrip("\r\n")
            if line.strip():
                scan.row(line, number)
    if scan.rows == 0:
        raise DataError(f"{path} has a header but no rows", path, 1, 1)
    numeric = tuple(n for i, n in enumerate(names) if i in scan.numeric and n != label)
    vocab = {n: tuple(sorted(scan.values[i])) for i, n in enumerate(names) if i in scan.values}
    n_y = len(vocab[label]) if label in vocab else label_classes(label, scan.largest, classes) if scan.li >= 0 else 0
    return TableInfo(path, numeric, vocab, label, n_y, scan.rows)


class _Scan:
    """The running state of a CSV scan: which columns are numbers, the categories seen."""

    def __init__(self, names: list[str], label: str, categorical: tuple[str, ...], classes: int | None, path: str):
        self.names, self.label, self.classes, self.path = names, label, classes, path
        self.values: dict[int, set[str]] = {names.index(c): set() for c in categorical if c in names}
        self.numeric = [i for i in range(len(names)) if i not in self.values]
        self.li = names.index(label) if label in names else -1  # -1: inputs without their label
        self.rows = 0
        self.largest = 0

    def row(self, line: str, number: int) -> None:
        fields = line.split(",") if '"' not in line else _csv_fields(line, self.path, number)
        if len(fields) != len(self.names):
            cols = _field_cols(line) if '"' not in line else _quoted_cols(line, fields)
            col = cols[len(self.names)] if len(fields) > len(self.names) else len(line) + 1
            raise DataError(f"row {number - 1} has {len(fields)} fields, the header has {len(self.names)} "
                            "(ragged rows)", self.path, number, col)
        try:  # the fast path: a well-formed row; positions are worked out only for an error
            values = [float(fields[i]) for i in self.numeric]
            ok = all(map(math.isfinite, values))
        except ValueError:
            ok = False
        if ok and self.li >= 0 and self.li not in self.values:
            y = float(fields[self.li])
            ok = label_problem(y, self.label, self.classes) is None
            self.largest = max(self.largest, int(y)) if ok else self.largest
        if not ok:
            self._error(line, fields, number)
        for i, seen in self.values.items():
            seen.add(fields[i].strip())
        self.rows += 1

    def _error(self, line: str, fields: list[str], number: int) -> None:
        cols = _field_cols(line) if '"' not in line else _quoted_cols(line, fields)
        for j in self.numeric:
            text = fields[j].strip()
            where = (self.path, number, cols[j], cols[j] + max(len(fields[j]), 1))
            name = self.names[j]
            try:
                value = float(text)
            except ValueError:
                if not text:
                    raise DataError(f"column `{name}` is empty on row {number - 1}; every numeric cell needs "
                                    "a number", *where) from None
                hint = "label" if j == self.li else "column"
                raise DataError(f"{hint} `{name}` holds {text!r}, not a number; declare it with "
                                f'categorical=["{name}"] if it holds categories', *where) from None
            if not math.isfinite(value):
                raise DataError(f"column `{name}` holds {text} (not a finite number)", *where)
            if j == self.li:
                problem = label_problem(value, self.label, self.classes)
                if problem is not None:
                    raise DataError(problem, *where)


# --------------------------------------------------------------------------- the source


def _fields(p: TableParams) -> dict[str, TensorType]:
    info = describe(p)
    check_rows(info.rows, p.val, p.test, info.path)
    return info.fields()


def _sizes(p: TableParams) -> dict[str, int]:
    return describe(p).sizes()


def _ranges(p: TableParams) -> dict[str, int]:
    return describe(p).ranges()


def _load(p: TableParams, seed: int) -> Any:
    from dsl.data.table_load import load_table

    return load_table(p, seed)


register_source(
    Source(
        "table",
        "table",
        TableParams,
        _fields,
        _load,
        doc="the rows of a CSV or Parquet file (pandas/pyarrow): numeric columns -> x [B, F] float, each "
        "`categorical` column -> a [B] long field of its name with N_<column> categories, the `label` column "
        "-> y [B] long with N_y classes; split 60/20/20, stratified",
        positional=("path",),
        sizes=_sizes,
        ranges=_ranges,
    )
)
