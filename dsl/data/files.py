"""Data files: ``.npz``, ``.pt`` and ``.csv``.

Field types are read statically where the format allows it without numpy or
torch: ``.npz`` headers (zip members holding ``.npy`` headers) and the ``.csv``
header row. A ``.pt`` file needs torch to open, so its fields are checked when
training starts instead (``file_fields`` returns None).
"""

from __future__ import annotations

import ast
import csv
import os
import struct
import zipfile
from typing import Any

from dsl.shapes import Sym, TensorType

# numpy dtype codes -> dsl dtypes
_KINDS = {"f": "float", "i": "long", "u": "long", "b": "bool"}


def resolve_path(p: Any) -> str:
    if os.path.isabs(p.path) or not p.base_dir or os.path.exists(p.path):
        return p.path
    return os.path.join(p.base_dir, p.path)


def _npy_header(fh: Any) -> dict[str, Any]:
    magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError("not an .npy member")
    major = fh.read(2)[0]
    size = struct.unpack("<H" if major == 1 else "<I", fh.read(2 if major == 1 else 4))[0]
    return ast.literal_eval(fh.read(size).decode("latin1"))


def npz_fields(path: str) -> dict[str, TensorType]:
    out: dict[str, TensorType] = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as fh:
                header = _npy_header(fh)
            shape = tuple(header["shape"])
            dtype = _KINDS.get(header["descr"].lstrip("<>|=")[0], "float")
            out[member[:-4]] = TensorType((Sym("B"),) + shape[1:], dtype)
    return out


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
        cols = csv_columns(path)
        if p.label not in cols:
            raise ValueError(f"column `{p.label}` not in {path} (columns: {', '.join(cols)})")
        return {"x": TensorType((Sym("B"), len(cols) - 1)), "y": TensorType((Sym("B"),), "long")}
    fields = npz_fields(path)
    return _select(fields, p.fields)


def _select(fields: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
    if wanted is None:
        return fields
    missing = [w for w in wanted if w not in fields]
    if missing:
        raise ValueError(f"no field {', '.join(missing)} in the file (it has: {', '.join(fields)})")
    return {k: fields[k] for k in wanted}


def _read_tensors(path: str, p: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    if path.endswith(".pt"):
        obj = torch.load(path, weights_only=True)
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: expected a dict of tensors")
        return {k: torch.as_tensor(v) for k, v in obj.items()}
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        cols, body = rows[0], np.array(rows[1:], dtype=np.float64)
        li = cols.index(p.label)
        x = np.delete(body, li, axis=1)
        return {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(body[:, li], dtype=torch.long)}
    with np.load(path, allow_pickle=False) as z:
        out = {}
        for k in z.files:
            a = z[k]
            t = torch.from_numpy(np.ascontiguousarray(a))
            out[k] = t.float() if a.dtype.kind == "f" else (t.bool() if a.dtype.kind == "b" else t.long())
        return out


def load_file(p: Any, seed: int) -> Any:
    from .loaders import split_table

    path = resolve_path(p)
    tensors = _select(_read_tensors(path, p), p.fields)
    return split_table(tensors, p, seed if p.seed is None else p.seed)
