"""Loading ``table()`` files with pandas (and pyarrow for Parquet) into a :class:`LoaderDataset`.

The file was described (and, for a CSV, every cell validated with its line and
column) by :func:`dsl.data.tables.describe`; pandas then parses it. Categories
become indices into the described vocabularies, so the sizes ``dsl check``
proved the model with are the sizes it trains with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dsl.data.files import DataError
from dsl.data.loaders import _split_indices, _standardize
from dsl.data.loading import LoaderDataset, TensorRows, whole
from dsl.data.tables import TableInfo, TableParams, describe


def read_frame(info: TableInfo) -> Any:
    """The table's columns as a pandas DataFrame (categorical columns as text)."""
    import pandas as pd

    labelled = info.classes > 0 or info.label in info.vocab
    columns = [*info.numeric, *info.vocab, *([info.label] if labelled and info.label not in info.vocab else [])]
    try:
        if info.path.lower().endswith(".csv"):
            types = {**{c: "float64" for c in columns}, **{c: str for c in info.vocab}}
            frame = pd.read_csv(info.path, usecols=columns, dtype=types, keep_default_na=False, na_filter=False,
                                skipinitialspace=True, encoding="utf-8")
        else:
            frame = pd.read_parquet(info.path, columns=columns, engine="pyarrow")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {info.path} ({type(exc).__name__}: {exc})", info.path) from None
    return frame


def codes(info: TableInfo, name: str, frame: Any, vocab: tuple[str, ...] | None = None) -> np.ndarray:
    """Each row's index in the column's vocabulary (its own, or ``vocab``: the training data's),
    its values spelled as :func:`describe` spelled them."""
    import pandas as pd

    vocab = info.vocab[name] if vocab is None else vocab
    if info.path.lower().endswith(".csv"):
        text = frame[name].str.strip()
    else:  # arrow's own text for each value, as the vocabulary was made
        from dsl.data.parquet import _open, read_column, text_values

        text = text_values(read_column(_open(info.path), name, info.path))
    out = pd.Index(list(vocab)).get_indexer(text).astype(np.int64)  # -1: a value not in the vocabulary
    if (out < 0).any():
        row = int(np.argmax(out < 0))
        raise DataError(f"row {row} of {info.path}: column `{name}` holds {str(text[row])!r}, a category the "
                        f"training data did not have (it had: {', '.join(vocab[:10])}"
                        f"{', ...' if len(vocab) > 10 else ''})", info.path)
    return out


def table_tensors(info: TableInfo, frame: Any) -> dict[str, torch.Tensor]:
    """x, the categorical fields and y as tensors; DataError naming the row of a bad value."""
    out: dict[str, torch.Tensor] = {}
    if info.numeric:
        x = frame[list(info.numeric)].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise DataError(f"row {row} of {info.path}: column `{info.numeric[col]}` holds {x[row, col]} "
                            "(numbers must be finite)", info.path)
        out["x"] = torch.from_numpy(x.astype(np.float32))
    for name in info.vocab:
        field = "y" if name == info.label else name
        out[field] = torch.from_numpy(codes(info, name, frame))
    if info.label not in info.vocab and info.label in frame.columns:
        y = frame[info.label].to_numpy(dtype=np.float64)
        bad = (y < 0) | (y >= info.classes) | (y != np.floor(y))
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"row {row} of {info.path}: label column `{info.label}` holds {y[row]:g}, outside the "
                            f"classes 0..{info.classes - 1}", info.path)
        out["y"] = torch.from_numpy(y.astype(np.int64))
    return out


def input_tensors(path: str, p: TableParams, vocabularies: dict[str, Any],
                  columns: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """``dsl predict``'s raw inputs from a table file like the training one (the label may be
    missing): ``x`` unscaled, its columns taken by name in the training order ``columns``
    (a run from before they were saved: file order), and each categorical column as indices
    into the training vocabulary."""
    info = describe(p, path, labelled=False)
    numeric = info.numeric if columns is None else _same_columns(info, columns)
    inputs = {k: v for k, v in info.vocab.items() if k != info.label}
    frame = read_frame(TableInfo(info.path, numeric, inputs, info.label, 0, info.rows))  # no label read
    out = table_tensors(TableInfo(info.path, numeric, {}, info.label, 0, info.rows), frame)
    for name, own in inputs.items():
        out[name] = torch.from_numpy(codes(info, name, frame, tuple(vocabularies.get(name, own))))
    return out


def _same_columns(info: TableInfo, trained: tuple[str, ...]) -> tuple[str, ...]:
    """The training columns of ``x``, each found by name in the new file: a column renamed,
    missing or added is an error, since reading by position would silently mix features."""
    missing = [c for c in trained if c not in info.numeric]
    extra = [c for c in info.numeric if c not in trained]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"it lacks the numeric column(s) {_names(missing)}")
        if extra:
            problems.append(f"it has numeric column(s) {_names(extra)} that training did not")
        raise DataError(f"{info.path} does not have the columns the model was trained on: {'; '.join(problems)} "
                        f"(training's, in order: {_names(trained)}; columns are matched by name)", info.path)
    return trained


def _names(columns: Any) -> str:
    shown = ", ".join(f"`{c}`" for c in list(columns)[:12])
    return shown + (", ..." if len(columns) > 12 else "")


def load_table(p: TableParams, seed: int) -> LoaderDataset:
    info = describe(p)
    tensors = table_tensors(info, read_frame(info))
    s = seed if p.seed is None else p.seed
    idx = _split_indices(info.rows, tensors["y"].numpy(), p.val, p.test, s)
    splits = {name: {k: v[torch.from_numpy(i)] for k, v in tensors.items()} for name, i in idx.items()}
    scaling = _standardize(splits) if p.standardize else {}
    rows = {name: TensorRows(fields) for name, fields in splits.items()}
    dataset = LoaderDataset(rows, p.batch, s, kind="table", collate=whole)
    dataset.scaling = scaling  # `dsl predict` scales new inputs the same way
    dataset.vocabularies = {("y" if k == info.label else k): list(v) for k, v in info.vocab.items()}
    dataset.columns = {"x": list(info.numeric)} if info.numeric else {}
    return dataset

