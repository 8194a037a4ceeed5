"""``dsl predict``: a run's model on new inputs, or on its own test split, written to a file.

Inputs: ``--data FILE`` holds raw inputs (``.npz``, a ``.pt`` dict of tensors, a ``.csv``
with or without the label column, or a ``.pt`` list of PyG graphs for a graph-list
source); they go through the run's preprocessing (:func:`~dsl.training.runs.Opened.trained`)
in one call (graph lists: a batch of graphs at a time). Without ``--data``, the spec's
test split (its evaluation pass for one-graph sources), batch by batch, already prepared
by its source. No label is needed.

Outputs: the spec's declared outputs, and, when the first one is a float tensor with a
class axis last (``[B, C]``, ``[N, C]``, ``[B, T, C]``; C >= 2), the predicted ``class``
(argmax) and the ``probabilities`` (softmax) over that axis. ``.npz`` and ``.pt`` keep every
output as it is; ``.csv`` and ``.parquet`` are tables with one row per input row: outputs
that are not per row (a scalar such as the MoE balance loss) are left out, and said so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dsl.language.errors import RunError
from dsl.language.files import atomic_write

SUFFIXES = (".npz", ".csv", ".parquet", ".pt")
CLASS, PROBABILITIES, LABEL = "class", "probabilities", "label"


@dataclass
class Prediction:
    """The declared outputs over all rows, and the class and probabilities derived from ``of``."""

    outputs: dict[str, Tensor]
    classes: Tensor | None = None
    probabilities: Tensor | None = None
    of: str | None = None
    names: tuple[str, ...] | None = None  # each class's label as the training data wrote it

    def named(self, vocabulary: Any) -> Prediction:
        """This prediction with ``label``s: the training vocabulary of ``y`` (text labels, image
        folders), when it has one name per class."""
        if self.probabilities is not None and vocabulary and len(vocabulary) == self.probabilities.shape[-1]:
            self.names = tuple(str(v) for v in vocabulary)
        return self

    def labels(self) -> list[str] | None:
        if self.names is None or self.classes is None:
            return None
        return [self.names[i] for i in self.classes.reshape(-1).tolist()]

    @property
    def rows(self) -> int:
        first = self.classes if self.classes is not None else next(
            (t for t in self.outputs.values() if t.dim() > 0), None)
        return int(first.shape[0]) if first is not None else 1

    def arrays(self) -> dict[str, Tensor]:
        """Every array under its name: the outputs, then ``class`` and ``probabilities``."""
        out = dict(self.outputs)
        if self.classes is not None and self.probabilities is not None:
            out[_free(CLASS, out)] = self.classes
            out[_free(PROBABILITIES, out)] = self.probabilities
        return out


def _free(name: str, taken: dict[str, Any]) -> str:
    while name in taken:  # an output of that name keeps it; the derived array moves aside
        name = f"predicted_{name}"
    return name


# --------------------------------------------------------------------------- inputs


def file_batches(path: str, opened: Any) -> list[dict[str, Tensor]]:
    """The raw inputs of a data file, as the batches to predict on."""
    if os.path.isdir(path):
        raise RunError(f"--data {path} is a folder: predict reads one file of raw inputs ({', '.join(SUFFIXES)}; "
                       "images as an array [N, C, H, W] of floats in [0, 1] in an .npz or .pt)", "E0703", path)
    if not os.path.isfile(path):
        raise RunError(f"data file not found: {path}", "E0702", path)
    if not path.lower().endswith((*SUFFIXES, ".pq")):
        raise RunError(f"--data {path}: predict reads {', '.join(SUFFIXES)} files (images as an array "
                       "[N, C, H, W] of floats in [0, 1] in an .npz or .pt)", "E0703", path)
    cfg = opened.prepared.cfg
    kind = cfg.source.kind if cfg.source is not None else "table"
    from dsl.data.files import DataError, _read_tensors
    from dsl.language.diagnostics import Diagnostic, Span
    from dsl.language.errors import SpecError

    try:
        if kind == "graphs" and path.endswith(".pt") and _holds_graphs(path):
            from dsl.data.graphfiles import graph_batches

            return graph_batches(path, int(getattr(cfg.source_params, "batch", 32)))
        if cfg.source is not None and cfg.source.name == "table":  # text categories -> the training indices
            from dsl.data.table_load import input_tensors

            prep = opened.preprocessing
            return [input_tensors(path, cfg.source_params, dict(prep.vocabularies), prep.columns.get("x"))]
        return [_read_tensors(path, cfg.source_params, inputs_only=True)]
    except DataError as exc:
        raise SpecError([Diagnostic(exc.code, exc.message, exc.span or Span(file=path))]) from None


def _holds_graphs(path: str) -> bool:
    from dsl.data.graphfiles import read_graph_metas

    try:
        return read_graph_metas(path) is not None
    except Exception:  # not a graph list (a dict of tensors): read as one
        return False


def split_batches(opened: Any) -> list[dict[str, Tensor]]:
    """The spec's test split (or its one evaluation pass), as its source prepares it."""
    from dsl.training.session import load_data

    if opened.prepared.cfg.source is None:  # trained on a Python Dataset: nothing to read a split from
        raise RunError(f"{opened.run.path} was trained on a Python Dataset (its spec has no `data =`): give the "
                       "rows to predict on with --data FILE (.npz, .pt, .csv or .parquet)", "E0501")
    data = load_data(opened.prepared.cfg)
    split = "test" if "test" in data.eval_splits else data.eval_splits[0]
    return list(data.batches(split))


# --------------------------------------------------------------------------- running


def predict(module: Any, batches: list[dict[str, Tensor]], device: str = "cpu") -> Prediction:
    """``module`` (eval mode) on every batch; outputs joined over batches, class and probabilities added."""
    from dsl.training.trainer import input_names

    names = input_names(module)
    declared = list(getattr(module, "dsl_outputs", {}))
    module.to(device)
    parts: dict[str, list[Tensor]] = {}
    for batch in batches:
        missing = [n for n in names if n not in batch]
        if missing:
            raise RunError(f"the data lacks the model input(s) {', '.join(missing)} (it has: {', '.join(batch)})",
                           "E0703")
        with torch.no_grad():
            out = module(**{n: _on(batch[n], device) for n in names})
        if not isinstance(out, dict):
            out = {declared[0] if declared else "output": out}
        for k, v in out.items():
            if not declared or k in declared:  # the spec's outputs, not what training reads
                parts.setdefault(k, []).append(v.detach().cpu())
    return classify({k: _join(v) for k, v in parts.items()})


def _on(t: Any, device: str) -> Any:
    return t.to(device) if isinstance(t, Tensor) else t


def _join(parts: list[Tensor]) -> Tensor:
    """One tensor from per-batch outputs: rows concatenated, scalars stacked, ragged trailing
    axes (bags of other lengths) padded with NaN."""
    if len(parts) == 1:
        return parts[0]
    if all(p.dim() == 0 for p in parts):
        return torch.stack(parts)
    if len({p.dim() for p in parts}) != 1:
        raise RunError("an output changes rank from one batch to the next; predict on one batch (--data)")
    width = [max(int(p.shape[i]) for p in parts) for i in range(1, parts[0].dim())]
    padded = []
    for p in parts:
        if list(p.shape[1:]) != width:
            grown = p.new_full((p.shape[0], *width), float("nan") if p.is_floating_point() else -1)
            grown[tuple(slice(0, n) for n in p.shape)] = p
            p = grown
        padded.append(p)
    return torch.cat(padded)


def classify(outputs: dict[str, Tensor]) -> Prediction:
    """The class (argmax) and probabilities (softmax) over the last axis of the first output,
    when it is a float tensor whose last axis holds two classes or more."""
    if not outputs:
        return Prediction(outputs)
    name, first = next(iter(outputs.items()))
    if not first.is_floating_point() or first.dim() < 2 or first.shape[-1] < 2:
        return Prediction(outputs)
    probs = torch.softmax(first.double(), dim=-1).to(first.dtype)
    return Prediction(outputs, first.argmax(-1), probs, name)


# --------------------------------------------------------------------------- writing


def check_out(path: str) -> str:
    """The format ``path``'s suffix names; a RunError for one predictions cannot be written in."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise RunError(f"--out {path}: write predictions to a .npz, .csv, .parquet or .pt file")
    return suffix


def write(path: str, pred: Prediction) -> list[str]:
    """Write ``pred`` in the format ``path``'s suffix names; notes on what a table left out."""
    suffix = check_out(path)
    arrays = pred.arrays()
    if suffix == ".npz":
        import numpy as np

        named = {k: v.numpy() for k, v in arrays.items()}
        labels = pred.labels()
        if labels is not None and pred.classes is not None:  # text, which loads without pickle
            named[_free(LABEL, named)] = np.array(labels, dtype=str).reshape(tuple(pred.classes.shape))

        def write_npz(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                np.savez(fh, **named)

        atomic_write(path, write_npz)
        return []
    if suffix == ".pt":
        atomic_write(path, lambda tmp: torch.save(arrays, tmp))
        return []
    columns, left_out = table(pred)
    if suffix == ".csv":
        atomic_write(path, lambda tmp: _write_csv(tmp, columns))
    else:
        _write_parquet(path, columns)
    return [f"`{k}` is {why}: left out of {os.path.basename(path)} (a .npz keeps it)" for k, why in left_out]


def table(pred: Prediction) -> tuple[dict[str, list[Any]], list[tuple[str, str]]]:
    """Columns of one value per row (``class``, ``prob_<c>``, then each output's ``<name>_<j>``),
    and the outputs that are not per row, with why."""
    n = pred.rows
    columns: dict[str, list[Any]] = {}
    left_out: list[tuple[str, str]] = []
    if pred.classes is not None and pred.probabilities is not None:
        _add(columns, CLASS, pred.classes, n)
        labels = pred.labels()
        if labels is not None and len(labels) == n:
            columns[LABEL] = labels
        _add(columns, "prob", pred.probabilities, n, always_suffix=True)
    for k, t in pred.outputs.items():
        if t.dim() == 0:
            left_out.append((k, "a scalar, not one value per row"))
        elif int(t.shape[0]) != n:
            left_out.append((k, f"{list(t.shape)}, not one row per input row ({n})"))
        else:
            _add(columns, k, t, n)
    return columns, left_out


def _add(columns: dict[str, list[Any]], name: str, t: Tensor, n: int, always_suffix: bool = False) -> None:
    flat = t.reshape(n, -1)
    width = int(flat.shape[1])
    values = flat.tolist()
    for j in range(width):
        key = f"{name}_{j}" if width > 1 or always_suffix else name
        while key in columns:
            key = f"{key}_"
        columns[key] = [row[j] for row in values]


def _write_csv(tmp: str, columns: dict[str, list[Any]]) -> None:
    import csv

    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(list(columns))
        w.writerows(zip(*columns.values(), strict=True))


def _write_parquet(path: str, columns: dict[str, list[Any]]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RunError("writing .parquet needs pyarrow: pip install pyarrow (or write .csv or .npz)") from None
    atomic_write(path, lambda tmp: pq.write_table(pa.table(columns), tmp))
