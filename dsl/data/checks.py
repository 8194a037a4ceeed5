"""Checks of untrusted data files: what a source reads and what it decodes, bounded.

A data file names its own sizes (a ``.npy`` header's shape, a ``.pt`` tensor's
strides), so a small file can ask for a large allocation: a header claiming
10**12 rows, a tensor expanded with stride 0 to millions of rows that share one
element. Before anything is decoded, the sizes a file declares are held against
its size on disk; after, every tensor must be a plain dense CPU tensor of a
numeric dtype; and there must be enough rows to split. Each problem is a
:class:`~dsl.data.files.DataError` (E0703) naming the file.

Pure Python up to :func:`check_tensors`, which receives torch tensors but does
not import torch itself.
"""

from __future__ import annotations

import math
import os
import stat
from typing import Any, BinaryIO

from dsl.data.files import DataError

MAX_DATA_BYTES = 2**33  # a data file on disk
MAX_EXPANSION = 100  # decoded bytes per byte on disk, past the first MAX_SMALL_DECODED (compressed .npz)
MAX_SMALL_DECODED = 2**26
DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                    "bool"})


def open_data(path: str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file within :data:`MAX_DATA_BYTES` (a FIFO or
    a device is refused at once, never waited on or read forever)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}", path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise DataError(f"{path} is not a regular file (a FIFO, a device or a folder); data files are read only "
                        "when they are plain files", path)
    if st.st_size > MAX_DATA_BYTES:
        os.close(fd)
        raise DataError(f"{path} is {st.st_size:,} bytes; data files are limited to {MAX_DATA_BYTES:,}", path)
    return os.fdopen(fd, "rb")


def read_data(path: str) -> bytes:
    """The whole of a data file, read through :func:`open_data`."""
    with open_data(path) as fh:
        return fh.read(MAX_DATA_BYTES + 1)[:MAX_DATA_BYTES]


def decoded_limit(file_bytes: int) -> int:
    """The most bytes the arrays of a file of ``file_bytes`` bytes may decode to."""
    return min(MAX_DATA_BYTES, max(MAX_SMALL_DECODED, MAX_EXPANSION * file_bytes))


def check_declared(name: str, shape: tuple[int, ...], itemsize: int, stored: int, path: str) -> None:
    """A ``.npy`` member's header against the bytes the archive says the member holds."""
    need = math.prod(shape) * itemsize
    if need > stored:
        raise DataError(f"field `{name}` of {path} declares {list(shape)} ({need:,} bytes) but holds {stored:,} "
                        "bytes: the header does not match the data", path)


def check_tensors(tensors: dict[str, Any], path: str, file_bytes: int) -> None:
    """Plain dense CPU tensors of a numeric dtype, no gradient, each element stored in the file once
    (a stride-0 or overlapping view would make a 2 kB file hold gigabytes of rows)."""
    total = 0
    for k, t in tensors.items():
        dtype = str(t.dtype).removeprefix("torch.")
        where = f"field `{k}` of {path}"
        if str(t.layout) != "torch.strided" or t.is_quantized or getattr(t, "is_nested", False):
            raise DataError(f"{where} is a {str(t.layout).removeprefix('torch.')} tensor; data fields are dense "
                            "tensors (save tensor.to_dense())", path)
        if t.device.type != "cpu":
            raise DataError(f"{where} is on the `{t.device.type}` device; data fields hold their values "
                            "(save tensor.cpu())", path)
        if dtype not in DTYPES:
            raise DataError(f"{where} has dtype {dtype}; fields must be float (16, 32 or 64 bit), integer or "
                            "bool", path)
        if t.requires_grad:
            raise DataError(f"{where} requires grad; data is not a parameter (save tensor.detach())", path)
        total += t.numel() * t.element_size()
    if total > max(file_bytes, 0) + 2**16:
        raise DataError(f"the fields of {path} hold {total:,} bytes of values but the file is {file_bytes:,} "
                        "bytes: some share storage (a stride-0 expand or overlapping views); save each field "
                        "with tensor.contiguous().clone()", path)


def split_sizes(n: int, val: float, test: float) -> tuple[int, int, int]:
    """(train, val, test) rows of a seeded ``n``-row split, as scikit-learn's train_test_split counts."""
    n_test = math.ceil(test * n)
    rest = n - n_test
    n_val = math.ceil(val / (1 - test) * rest) if val > 0 else 0
    return rest - n_val, n_val, n_test


def check_rows(n: int, val: float, test: float, path: str, what: str = "rows") -> None:
    """Enough ``what`` (rows, graphs) for every split to get at least one."""
    def fits(m: int) -> bool:
        tr, va, te = split_sizes(m, val, test)
        return tr >= 1 and te >= 1 and (va >= 1 or val == 0)

    if fits(n):
        return
    need = next(m for m in range(1, 10_000) if fits(m))
    raise DataError(f"{path} has {n} {what[:-1] if n == 1 else what}: too few to split into train, "
                    f"{'val and ' if val else ''}test (val={val}, test={test}); at least {need} are needed", path)


def find_csv_value(path: str, column: str, bad: Any) -> tuple[int, int, str] | None:
    """(line, column, text) of the first value of CSV ``column`` for which ``bad(float)`` holds."""
    import csv

    try:
        with open_data(path) as fh:
            lines = fh.read(MAX_DATA_BYTES).decode("utf-8", "replace").split("\n")
    except (OSError, DataError):
        return None
    header = [h.strip() for h in next(csv.reader(lines[:1]), [])]
    if column not in header:
        return None
    j = header.index(column)
    for number, line in enumerate(lines[1:], start=2):
        fields = line.rstrip("\r").split(",")
        if j < len(fields) and fields[j].strip() and '"' not in line:
            try:
                value = float(fields[j])
            except ValueError:
                continue
            if bad(value):
                return number, len(",".join(fields[:j])) + (1 if j else 0) + 1, fields[j].strip()
    return None
