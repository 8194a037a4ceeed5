"""A ``torch.utils.data.Dataset`` of dicts from Python, as training data: :func:`from_torch_dataset`.

Each item is a dict of tensors (or numbers) by field name, every item with the
same keys, shapes and dtypes; its fields are declared from the first item
(``x: [3, 8]`` in an item is ``x: [B, 3, 8]`` in a batch). Batches come from a
``DataLoader`` with torch's default collation (``DistributedSampler`` under
DDP). A dict ``{"train": ds, "val": ds, "test": ds}`` gives its own splits;
one dataset is split 60/20/20 at random (seeded).

The spec's train section then needs no ``data``: ``prepare(spec,
fields=fields)`` checks the model against these fields, and
``dsl.training.session.train(prepared, options, data=dataset)`` trains on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Subset

from dsl.data.loading import SPLITS, LoaderDataset
from dsl.language.errors import DslError
from dsl.language.shapes import Sym, TensorType

_DTYPES = {torch.int64: "long", torch.int32: "int", torch.bool: "bool"}


class DatasetError(DslError, TypeError):
    """A Python dataset whose items are not dicts of tensors by field name."""


def _item_tensors(item: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(item, Mapping) or not item:
        raise DatasetError(f"{where} is a {type(item).__name__}; each item must be a dict of tensors by field name")
    out = {}
    for k, v in item.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise DatasetError(f"{where}: field name {k!r} is not an identifier")
        try:
            out[k] = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DatasetError(f"{where}: field `{k}` is not a tensor ({type(v).__name__}: {exc})") from None
        if out[k].is_complex():
            raise DatasetError(f"{where}: field `{k}` is complex; fields are float, integer or bool")
    return out


def item_fields(item: Any, where: str = "item 0") -> dict[str, TensorType]:
    """The batch fields an item gives: its shapes with a leading batch dim ``B``."""
    fields = {}
    for k, t in _item_tensors(item, where).items():
        dtype = "float" if t.is_floating_point() else _DTYPES.get(t.dtype, "long")
        fields[k] = TensorType((Sym("B"), *t.shape), dtype)
    return fields


def _collate(items: list[Any]) -> dict[str, torch.Tensor]:
    first = _item_tensors(items[0], "an item")
    tensors = [_item_tensors(it, "an item") for it in items]
    out = {}
    for k, t in first.items():
        try:
            stacked = torch.stack([x[k] for x in tensors])
        except (KeyError, RuntimeError) as exc:
            raise DatasetError(f"the items of a batch differ in field `{k}` ({type(exc).__name__}: {exc}); "
                               "every item needs the same fields and shapes") from None
        out[k] = stacked.float() if t.is_floating_point() else stacked.long() if t.dtype not in _DTYPES else stacked
    return out


def _split(dataset: Any, val: float, test: float, seed: int) -> dict[str, Any]:
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = round(n * test), round(n * val)
    if n - n_test - n_val < 1:
        raise DatasetError(f"a dataset of {n} items leaves no training items after the val/test splits")
    cut = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {s: Subset(dataset, sorted(cut[s])) for s in SPLITS}


def from_torch_dataset(dataset: Any, *, batch: int = 64, val: float = 0.2, test: float = 0.2,
                       seed: int = 0) -> tuple[LoaderDataset, dict[str, TensorType]]:
    """(the trainer's dataset, its declared fields) for a map-style torch Dataset of dicts,
    or a dict of them by split (``train``, and ``val``/``test``)."""
    if isinstance(dataset, Mapping) and "train" in dataset and set(dataset) <= set(SPLITS):
        splits = dict(dataset)
    else:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise DatasetError(f"{type(dataset).__name__} is not a map-style dataset (it needs __len__ and "
                               "__getitem__)")
        splits = _split(dataset, val, test, seed)
    if len(splits["train"]) == 0:
        raise DatasetError("the training split is empty")
    fields = item_fields(splits["train"][0])
    return LoaderDataset(splits, batch, seed, kind="table", collate=_collate), fields
