"""Batches through ``torch.utils.data.DataLoader``: the runtime of ``table()``, ``images()``,
``pyg()`` and datasets given from Python. Imports torch; loaded lazily.

:class:`LoaderDataset` holds one map-style ``torch.utils.data.Dataset`` per split
and makes a ``DataLoader`` for each pass over one. The training split is shuffled
anew every epoch, reproducibly: by a generator seeded from (seed, epoch) in one
process, and by ``DistributedSampler`` (``set_epoch``) when several processes
share it, which pads every rank to the same number of batches as DDP needs.
Evaluation splits are cut into disjoint strided shards (no padding, so no row is
counted twice; the metrics are synchronised across ranks afterwards).

A dataset that implements ``__getitems__`` (as :class:`TensorRows` does) is
asked for a whole batch of indices at once: one tensor indexing per field
instead of one call and one collation per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from dsl.data.base import SPLIT_IDS, Batch, Dataset, _generator

SPLITS = ("train", "val", "test")


class TensorRows(torch.utils.data.Dataset):
    """Rows of a dict of tensors that share their first axis; batches are fetched whole.

    ``convert`` turns a fetched batch into the fields training sees (``images()``
    keeps uint8 pixels and scales a batch at a time)."""

    def __init__(self, tensors: dict[str, torch.Tensor], convert: Callable[[Batch], Batch] | None = None):
        self.tensors = tensors
        self.convert = convert
        self.rows = int(next(iter(tensors.values())).shape[0]) if tensors else 0

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([i])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {k: v[idx] for k, v in self.tensors.items()}
        return self.convert(batch) if self.convert is not None else batch

    def subset(self, idx: torch.Tensor) -> TensorRows:
        return TensorRows({k: v[idx] for k, v in self.tensors.items()}, self.convert)


def whole(batch: Any) -> Any:
    """The collate function of datasets that fetch whole batches: the batch as fetched."""
    return batch


class LoaderDataset(Dataset):
    """Splits of map-style torch datasets, batched by a DataLoader (``loader``, torch's by default).

    ``collate`` joins fetched items into a batch; ``convert`` maps what the loader
    yields to the fields (a PyG ``Batch`` to a dict)."""

    def __init__(self, splits: dict[str, Any], batch: int, seed: int, *, kind: str = "table",
                 collate: Callable[[Any], Any] | None = None, loader: Callable[..., Any] = DataLoader,
                 convert: Callable[[Any], Batch] | None = None):
        self.splits = {s: splits[s] for s in SPLITS if s in splits}
        self.batch = batch
        self.seed = seed
        self.kind = kind
        self.collate = collate
        self.loader = loader
        self.convert = convert
        self.eval_splits = tuple(s for s in ("val", "test") if self.num_items(s) > 0)

    def num_items(self, split: str) -> int:
        return len(self.splits[split]) if split in self.splits else 0

    def num_batches(self, split: str, world: int = 1) -> int:
        per = -(-self.num_items(split) // world)
        return max(1, -(-per // self.batch))

    def _sampler(self, split: str, epoch: int, rank: int, world: int) -> Any:
        n = self.num_items(split)
        if split != "train":
            return range(rank, n, world)
        if world > 1:
            sampler = DistributedSampler(self.splits[split], num_replicas=world, rank=rank, shuffle=True,
                                         seed=self.seed, drop_last=False)
            sampler.set_epoch(epoch)
            return sampler
        return torch.randperm(n, generator=_generator(self.seed, SPLIT_IDS[split], epoch)).tolist()

    def batches(self, split: str, epoch: int = 0, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        if self.num_items(split) == 0:
            return
        kwargs: dict[str, Any] = {"batch_size": self.batch, "sampler": self._sampler(split, epoch, rank, world)}
        if self.collate is not None:
            kwargs["collate_fn"] = self.collate
        for batch in self.loader(self.splits[split], **kwargs):
            yield self.convert(batch) if self.convert is not None else batch


def tensor_splits(tensors: dict[str, torch.Tensor], idx: dict[str, Any],
                  convert: Callable[[Batch], Batch] | None = None) -> dict[str, TensorRows]:
    """:class:`TensorRows` per split from row indices (numpy arrays or tensors) per split."""
    rows = TensorRows(tensors, convert)
    return {s: rows.subset(torch.as_tensor(i, dtype=torch.long)) for s, i in idx.items()}
