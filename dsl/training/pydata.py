"""``dsl.train(spec, data=dataset)``: a ``torch.utils.data.Dataset`` of dicts as a run's data.

Each item is a dict of tensors (or numbers, or numpy arrays) by field name, as the spec's
inputs and loss name them. One dataset is split 60/20/20 into train/val/test, seeded by the
run's seed, as the tables are; a dict ``{"train": ..., "val": ..., "test": ...}`` gives the
splits itself (``val`` and ``test`` may be left out). Batches are the items stacked
(``default_collate``), floats as float32 and integers as int64, by a
``torch.utils.data.DataLoader`` (:class:`~dsl.data.loading.LoaderDataset`: shuffled each
epoch like every other source, ``DistributedSampler`` under DDP). The fields are read from the first item, so the spec is checked against
them before anything trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dsl.data.loading import LoaderDataset
from dsl.language.errors import RunError
from dsl.language.shapes import Sym, TensorType

SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_BATCH = 64


def collate(items: list[Any]) -> dict[str, torch.Tensor]:
    """Items (dicts) stacked into a batch; floats float32, integers int64."""
    from torch.utils.data import default_collate

    batch = default_collate(items)
    out = {}
    for k, v in batch.items():
        v = torch.as_tensor(v)
        out[k] = v.float() if v.is_floating_point() else (v if v.dtype == torch.bool else v.long())
    return out


def _dtype(t: torch.Tensor) -> str:
    return "float" if t.is_floating_point() else ("bool" if t.dtype == torch.bool else "long")


def fields_of(dataset: Any) -> dict[str, TensorType]:
    """The fields of a batch, from the first item: ``[B, *item shape]`` each."""
    first = _first_split(dataset)
    try:
        item = first[0]
    except Exception as exc:  # any failure of the user's __getitem__ is theirs: say where it came from
        raise RunError(f"data=: reading item 0 of the dataset failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(item, Mapping) or not item or not all(isinstance(k, str) and k.isidentifier() for k in item):
        raise RunError("data= takes a Dataset whose items are dicts of tensors by field name "
                       f"(item 0 is {type(item).__name__})")
    example = collate([item])
    return {k: TensorType((Sym("B"), *v.shape[1:]), _dtype(v)) for k, v in example.items()}


def _first_split(dataset: Any) -> Any:
    if isinstance(dataset, Mapping):
        unknown = sorted(set(dataset) - set(SPLITS))
        if unknown or "train" not in dataset:
            raise RunError(f"data= as a dict names its splits: train (required), val, test; got {sorted(dataset)}")
        return dataset["train"]
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__") or len(dataset) == 0:
        raise RunError("data= takes a source expression such as \"digits(batch=64)\", or a non-empty "
                       "torch.utils.data.Dataset of dicts (or a dict of them by split)")
    return dataset


def adapt(dataset: Any, batch: int | None, seed: int) -> LoaderDataset:
    """The dsl dataset of a Python one: its splits, batched and shuffled like the other sources."""
    _first_split(dataset)
    if isinstance(dataset, Mapping):
        splits = dict(dataset)
    else:
        from torch.utils.data import random_split

        parts = random_split(dataset, FRACTIONS, generator=torch.Generator().manual_seed(seed))
        splits = dict(zip(SPLITS, parts, strict=True))
    data = LoaderDataset(splits, batch or DEFAULT_BATCH, seed, collate=collate)
    if not data.eval_splits:
        raise RunError("data=: no validation or test items to evaluate on")
    return data
