"""Data files: ``.npz``, ``.pt`` and ``.csv``.

Field types are read statically where the format allows it without numpy or
torch: ``.npz`` headers (zip members holding ``.npy`` headers) and the ``.csv``
header row. A ``.pt`` file needs torch to open, so its fields are checked when
training starts instead (``file_fields`` returns None).
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import os
import struct
import zipfile
from collections.abc import Iterator
from typing import Any

from dsl.language.diagnostics import Span
from dsl.language.shapes import Sym, TensorType

# numpy dtype codes -> dsl dtypes
_KINDS = {"f": "float", "i": "long", "u": "long", "b": "bool"}
_KIND_WORDS = {"c": "complex", "U": "text", "S": "bytes", "O": "Python objects", "V": "raw records",
               "M": "dates", "m": "time deltas"}
CSV_SCAN_LIMIT = 2**20  # bytes of CSV validated by `dsl check` (training always validates all)
MAX_LABEL = 2**31 - 1  # class numbers: larger ones are mistakes (and would not fit a long exactly)


class DataError(ValueError):
    """A data file that cannot be used: becomes diagnostic E0703. ``line``/``col``
    locate the problem inside a text file (.csv); otherwise the diagnostic
    points at the spec's ``data = ...``."""

    code = "E0703"

    def __init__(self, message: str, file: str, line: int = 0, col: int = 0, end_col: int = 0):
        super().__init__(message)
        self.message = message
        self.span = Span(file=file, line=line, col=col, end_line=line, end_col=max(end_col, col + 1)) if line else None


def resolve_path(p: Any) -> str:
    if os.path.isabs(p.path) or not p.base_dir or os.path.exists(p.path):
        return p.path
    return os.path.join(p.base_dir, p.path)


MAX_NPY_HEADER = 10_000  # bytes of a .npy header (numpy's own default limit)


def _npy_header(fh: Any) -> dict[str, Any]:
    """A ``.npy`` header, checked: a dict with a dtype string, a bool and a shape of sizes."""
    magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError("not an .npy member")
    version = fh.read(2)
    if len(version) != 2 or version[0] not in (1, 2, 3):
        raise ValueError("an unknown .npy version")
    wide = version[0] != 1
    size = struct.unpack("<I" if wide else "<H", fh.read(4 if wide else 2))[0]
    if size > MAX_NPY_HEADER:
        raise ValueError(f"a .npy header of {size:,} bytes (the limit is {MAX_NPY_HEADER:,})")
    try:
        header = ast.literal_eval(fh.read(size).decode("latin1"))
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        raise ValueError("a malformed .npy header") from None
    shape = header.get("shape") if isinstance(header, dict) else None
    if (not isinstance(header, dict) or not isinstance(header.get("descr"), (str, list))
            or not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape)):
        raise ValueError("a malformed .npy header (it needs `descr`, and a `shape` of sizes)")
    return header


def _itemsize(descr: str) -> int:
    digits = "".join(c for c in descr if c.isdigit())
    return int(digits) if digits else 1


def npz_fields(path: str) -> dict[str, TensorType]:
    """Field types from the ``.npy`` headers alone; refuses non-numeric dtypes,
    scalars and fields whose row counts differ (ragged)."""
    out, rows = npz_headers(path)
    _same_rows(rows, path)
    return out


def npz_headers(path: str) -> tuple[dict[str, TensorType], dict[str, int]]:
    """Field types and row counts from the ``.npy`` headers, each checked against the bytes its
    member holds (before numpy allocates what a header declares)."""
    from dsl.data.checks import check_declared, decoded_limit, open_data

    out: dict[str, TensorType] = {}
    rows: dict[str, int] = {}
    try:
        with open_data(path) as raw, zipfile.ZipFile(raw) as zf:
            stored = sum(i.file_size for i in zf.infolist())
            if stored > decoded_limit(os.fstat(raw.fileno()).st_size):
                raise DataError(f"{path} unpacks to {stored:,} bytes, too many for a file of its size (a zip bomb?)",
                                path)
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as fh:
                    header = _npy_header(fh)
                name = member[:-4]
                shape = tuple(header["shape"])
                descr = header["descr"]
                kind = descr.lstrip("<>|=")[0] if isinstance(descr, str) else "V"
                if kind not in _KINDS:
                    raise DataError(f"field `{name}` of {path} has dtype {descr!r} "
                                    f"({_KIND_WORDS.get(kind, 'not numbers')}); fields must be float, integer "
                                    "or bool arrays", path)  # fmt: skip
                if not shape:
                    raise DataError(f"field `{name}` of {path} is a scalar; every field needs a first axis of rows",
                                    path)
                check_declared(name, shape, _itemsize(descr), zf.getinfo(member).file_size, path)
                rows[name] = int(shape[0])
                out[name] = TensorType((Sym("B"),) + shape[1:], _KINDS[kind])
    except (zipfile.BadZipFile, ValueError, KeyError, SyntaxError, struct.error, IndexError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path} is not a readable .npz archive ({type(exc).__name__}: {exc})", path) from None
    return out, rows


def _same_rows(rows: dict[str, int], path: str) -> None:
    if len(set(rows.values())) > 1:
        listed = ", ".join(f"`{k}` {v}" for k, v in rows.items())
        raise DataError(f"the fields of {path} have different numbers of rows ({listed}); "
                        "every field needs one entry per row", path)


def _field_cols(line: str) -> list[int]:
    """1-based start column of each comma-separated field of a raw CSV line."""
    cols, pos = [1], 0
    while True:
        pos = line.find(",", pos)
        if pos < 0:
            return cols
        pos += 1
        cols.append(pos + 1)


def scan_csv(path: str, label: str, limit: int | None = None, require_label: bool = True) -> list[str]:
    """Validate a numeric CSV (pure Python) and return its header.

    Every row must have the header's number of fields; every value must be a
    finite number; the label column must hold integers. Problems raise
    :class:`DataError` with the line and column of the offending field. With
    ``limit`` only that many bytes are scanned (``dsl check`` stays quick);
    ``require_label=False`` accepts a file without the label column (``dsl predict``)."""
    import math

    with text_lines(path) as lines:
        header_line = next(lines, "")
        if "\r" in header_line.rstrip("\r\n"):
            raise DataError(f"{path} ends its lines with a lone carriage return (\\r); CSV lines end in \\n or "
                            "\\r\\n", path, 1, header_line.index("\r") + 1)
        header = _csv_fields(header_line, path, 1)
        names = [h.strip() for h in header]
        if not names or names == [""]:
            raise DataError(f"{path} has no header row of column names", path, 1, 1)
        cols = _field_cols(header_line.rstrip("\r\n"))
        for i, n in enumerate(names):
            if n in names[:i]:
                raise DataError(f"column `{n}` appears twice in the header", path, 1, cols[min(i, len(cols) - 1)])
        if label not in names and require_label:
            raise DataError(f"no label column `{label}` in the header (columns: {', '.join(names)})", path, 1, 1,
                            len(header_line.rstrip("\r\n")) + 1)
        li = names.index(label) if label in names else -1
        seen = len(header_line)
        for number, raw in enumerate(lines, start=2):
            seen += len(raw)
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(",") if '"' not in line else _csv_fields(line, path, number)
            try:  # the fast path: a well-formed row; positions are worked out only for an error
                values = [float(t) for t in fields]
                ok = (len(fields) == len(names) and all(map(math.isfinite, values))
                      and (li < 0 or (values[li] == int(values[li]) and abs(values[li]) <= MAX_LABEL)))
            except ValueError:
                ok = False
            if not ok:
                _row_error(line, fields, names, li, path, number)
            if limit is not None and seen > limit:
                break
    return names


def _row_error(line: str, fields: list[str], names: list[str], li: int, path: str, number: int) -> None:
    """Raise the DataError of a row that failed the fast check, at its field."""
    import math

    cols = _field_cols(line) if '"' not in line else _quoted_cols(line, fields)
    if len(fields) != len(names):
        col = cols[len(names)] if len(fields) > len(names) else len(line) + 1
        raise DataError(f"row {number - 1} has {len(fields)} fields, the header has {len(names)} (ragged rows)",
                        path, number, col)
    for j, text in enumerate(fields):
        where = (path, number, cols[j], cols[j] + max(len(text), 1))
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"column `{names[j]}` holds {text.strip()!r}, not a number", *where) from None
        if not math.isfinite(value):
            raise DataError(f"column `{names[j]}` holds {text.strip()} (not a finite number)", *where)
        if j == li and (value != int(value) or abs(value) > MAX_LABEL):
            raise DataError(f"label column `{names[li]}` holds {text.strip()}; labels are class "
                            "numbers 0, 1, 2, ...", *where)


@contextlib.contextmanager
def text_lines(path: str) -> Iterator[Iterator[str]]:
    """The lines of a data file (a regular file of bounded size), decoded one by one so that a bad
    byte has a line and column."""
    from dsl.data.checks import open_data

    with open_data(path) as fh:
        yield _lines(fh, path)


def _csv_fields(line: str, path: str, number: int) -> list[str]:
    """The fields of one CSV line with quotes; csv's own errors (a field over its size limit, a stray
    line end) are DataErrors at the line."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        raise DataError(f"line {number} of {path} is not valid CSV ({exc})", path, number, 1) from None


def _lines(fh: Any, path: str) -> Any:
    for number, raw in enumerate(fh, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {number}",
                            path, number, exc.start + 1) from None


def _quoted_cols(line: str, fields: list[str]) -> list[int]:
    """Field columns of a line with quotes: each field's text searched left to right."""
    cols, pos = [], 0
    for f in fields:
        at = line.find(f, pos)
        at = pos if at < 0 else at
        cols.append(at + 1)
        pos = at + len(f)
    return cols


def csv_columns(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


def file_fields(p: Any) -> dict[str, TensorType] | None:
    path = resolve_path(p)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    if path.endswith(".pt"):
        return None
    if path.endswith(".csv"):
        cols = scan_csv(path, p.label, limit=CSV_SCAN_LIMIT)
        return {"x": TensorType((Sym("B"), len(cols) - 1)), "y": TensorType((Sym("B"),), "long")}
    fields = npz_fields(path)
    return _select(fields, p.fields)


def _select(fields: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
    if wanted is None:
        return fields
    missing = [w for w in wanted if w not in fields]
    if missing:
        raise DataError(f"no field {', '.join(missing)} in the file (it has: {', '.join(fields)})", "")
    return {k: fields[k] for k in wanted}


def _read_tensors(path: str, p: Any, inputs_only: bool = False) -> dict[str, Any]:
    """A data file's fields. ``inputs_only`` (``dsl predict``): a CSV may lack the label
    column, and fields need not share their number of rows (a graph's ``x`` and ``edge_index``)."""
    import numpy as np
    import torch

    if path.endswith(".pt"):
        from dsl.data.loaders import read_pt

        return read_pt(path, same_rows=not inputs_only)
    if path.endswith(".csv"):
        from dsl.data.checks import read_data

        label = getattr(p, "label", "y")
        cols = scan_csv(path, label, require_label=not inputs_only)  # precise errors before numpy sees it
        text = read_data(path).decode("utf-8")
        try:
            rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(f.strip() for f in r)]
            body = np.array(rows[1:], dtype=np.float64).reshape(len(rows) - 1, len(cols))
        except (csv.Error, ValueError) as exc:  # scan_csv reads line by line: a quoted line break ends here
            raise DataError(f"{path} is not valid CSV ({exc})", path) from None
        if label not in cols:
            return {"x": torch.tensor(body, dtype=torch.float32)}
        li = cols.index(label)
        x = np.delete(body, li, axis=1)
        return {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(body[:, li], dtype=torch.long)}
    from dsl.data.loaders import read_npz

    return read_npz(path, same_rows=not inputs_only)


def load_file(p: Any, seed: int) -> Any:
    from dsl.data.checks import check_rows
    from dsl.data.loaders import split_table

    path = resolve_path(p)
    tensors = _select(_read_tensors(path, p), p.fields)
    check_rows(int(next(iter(tensors.values())).shape[0]), p.val, p.test, path)
    return split_table(tensors, p, seed if p.seed is None else p.seed)
