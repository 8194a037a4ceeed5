"""Runtime datasets: batches as dicts of tensors. Imports torch; loaded lazily.

Every dataset yields the same fields its source declares. Splits are
``train``, ``val`` and ``test``; ``eval_splits`` says which ones metrics are
reported on (a single full graph has one evaluation pass whose rows the
spec's masks select). Sharding for distributed training keeps every rank at
the same number of training batches (DDP needs equal step counts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

Batch = dict[str, torch.Tensor]


def _generator(*parts: int) -> torch.Generator:
    # One seed per (seed, split, epoch) so every epoch's order is reproducible
    # and independent of how many batches earlier epochs consumed.
    g = torch.Generator()
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    g.manual_seed(seed)
    return g


SPLIT_IDS = {"train": 1, "val": 2, "test": 3, "graph": 4, "predict": 5}


class Dataset:
    kind = "table"
    eval_splits: tuple[str, ...] = ("val", "test")
    #: field -> (mean, std) that the source standardised the field with (training
    #: split statistics); saved in the run as ``preprocess.json`` (:mod:`dsl.data.preprocess`),
    #: so ``dsl predict`` and ``dsl export`` apply the same scaling to raw inputs.
    scaling: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # noqa: RUF012 - replaced, never mutated
    #: facts about the data worth keeping with a run (``meta.json``'s ``data_info``), such
    #: as a generated corpus's entropy per character
    info: dict[str, object] = {}  # noqa: RUF012 - replaced, never mutated

    def batches(self, split: str, epoch: int = 0, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        raise NotImplementedError

    def num_batches(self, split: str, world: int = 1) -> int:
        raise NotImplementedError

    def num_items(self, split: str) -> int:
        raise NotImplementedError

    def example(self) -> Batch:
        """One batch, for dims the model needs at build time."""
        return next(iter(self.batches("train")))


def _rank_indices(order: torch.Tensor, rank: int, world: int, pad: bool) -> torch.Tensor:
    if world == 1:
        return order
    n = order.numel()
    if pad:
        per = -(-n // world)
        total = per * world
        if total > n:  # wrap around as DistributedSampler does
            order = torch.cat([order, order[: total - n]])
        return order[rank:total:world]
    return order[rank::world]


class TableDataset(Dataset):
    """Rows of tensors split train/val/test; the train split is shuffled each epoch."""

    kind = "table"

    def __init__(self, splits: dict[str, Batch], batch: int, seed: int):
        self.splits = splits
        self.batch = batch
        self.seed = seed

    def num_items(self, split: str) -> int:
        first = next(iter(self.splits[split].values()))
        return int(first.shape[0])

    def _order(self, split: str, epoch: int, rank: int, world: int) -> torch.Tensor:
        n = self.num_items(split)
        if split == "train":
            order = torch.randperm(n, generator=_generator(self.seed, SPLIT_IDS[split], epoch))
        else:
            order = torch.arange(n)
        return _rank_indices(order, rank, world, pad=split == "train")

    def num_batches(self, split: str, world: int = 1) -> int:
        n = self.num_items(split)
        per = -(-n // world)
        return max(1, -(-per // self.batch))

    def batches(self, split: str, epoch: int = 0, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        order = self._order(split, epoch, rank, world)
        data = self.splits[split]
        for start in range(0, order.numel(), self.batch):
            idx = order[start : start + self.batch]
            yield {k: v[idx] for k, v in data.items()}


SPLIT_MASKS = ("train_mask", "val_mask", "test_mask")


class GraphDataset(Dataset):
    """One full graph: every step sees the whole graph; masks select the rows.

    Its evaluation splits are ``val`` and ``test`` when it has ``val_mask`` and
    ``test_mask``: evaluating one feeds the graph with every split mask replaced
    by that split's, so the loss and metrics, whichever split mask they were
    written with, count the nodes of the split evaluated. Without them there is
    one evaluation pass, ``graph``, on the masks as they are.
    """

    kind = "graph"

    def __init__(self, data: Batch):
        self.data = data
        self.eval_splits = tuple(s for s in ("val", "test") if f"{s}_mask" in data) or ("graph",)

    def num_items(self, split: str) -> int:
        return 1

    def num_batches(self, split: str, world: int = 1) -> int:
        return 1

    def batches(self, split: str, epoch: int = 0, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        batch = dict(self.data)
        mask = batch.get(f"{split}_mask") if split in ("val", "test") else None
        if mask is not None:
            batch.update({name: mask for name in SPLIT_MASKS if name in batch})
        yield batch


def collate_graphs(graphs: Sequence[Batch], node_fields: Sequence[str], edge_fields: Sequence[str] = ("edge_index",)) -> Batch:
    """PyG-style batching: concatenate node rows, offset edge indices, add ``batch``."""
    out: Batch = {}
    sizes = [int(g[node_fields[0]].shape[0]) for g in graphs]
    offsets = torch.tensor([0] + sizes[:-1]).cumsum(0)
    for f in node_fields:
        out[f] = torch.cat([g[f] for g in graphs])
    for f in edge_fields:
        out[f] = torch.cat([g[f] + off for g, off in zip(graphs, offsets.tolist(), strict=False)], dim=1)
    out["batch"] = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(sizes)])
    graph_fields = [k for k in graphs[0] if k not in out]
    for f in graph_fields:  # graph-level targets: one row per graph
        out[f] = torch.stack([g[f].reshape(-1)[0] if g[f].numel() == 1 else g[f] for g in graphs])
    return out


class ListDataset(Dataset):
    """A list of items per split, shuffled and collated into batches by ``collate``."""

    def __init__(self, splits: dict[str, list], batch: int, seed: int, collate, kind: str):
        self.splits = splits
        self.batch = batch
        self.seed = seed
        self.collate = collate
        self.kind = kind

    def num_items(self, split: str) -> int:
        return len(self.splits[split])

    def num_batches(self, split: str, world: int = 1) -> int:
        per = -(-self.num_items(split) // world)
        return max(1, -(-per // self.batch))

    def batches(self, split: str, epoch: int = 0, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        items = self.splits[split]
        if split == "train":
            order = torch.randperm(len(items), generator=_generator(self.seed, SPLIT_IDS[split], epoch))
        else:
            order = torch.arange(len(items))
        order = _rank_indices(order, rank, world, pad=split == "train")
        for start in range(0, order.numel(), self.batch):
            yield self.collate([items[i] for i in order[start : start + self.batch].tolist()])


def pad_bags(bags: Sequence[tuple[torch.Tensor, int]]) -> Batch:
    """Pad instance sets to the longest bag; ``mask`` marks real instances and ``padding``
    (its negation, the convention of attention and Hopfield masks) the padded slots."""
    longest = max(int(b.shape[0]) for b, _ in bags)
    feat = int(bags[0][0].shape[1])
    x = torch.zeros(len(bags), longest, feat)
    mask = torch.zeros(len(bags), longest, dtype=torch.bool)
    for i, (b, _) in enumerate(bags):
        x[i, : b.shape[0]] = b
        mask[i, : b.shape[0]] = True
    y = torch.tensor([label for _, label in bags], dtype=torch.long)
    return {"x": x, "mask": mask, "padding": ~mask, "y": y}


class EpisodeDataset(Dataset):
    """Few-shot episodes: each batch is one N-way K-shot task from one class pool.

    Training episodes are redrawn every epoch; validation and test episodes are
    fixed (seeded independently of the epoch) so their metrics are comparable.
    """

    kind = "episodes"

    def __init__(self, pools: dict[str, dict[int, torch.Tensor]], ways: int, shots: int, queries: int, episodes: dict[str, int], seed: int):
        self.pools = pools
        self.ways, self.shots, self.queries = ways, shots, queries
        self.episodes = episodes
        self.seed = seed

    def num_items(self, split: str) -> int:
        return self.episodes[split]

    def num_batches(self, split: str, world: int = 1) -> int:
        return -(-self.episodes[split] // world)

    def _episode(self, pool: dict[int, torch.Tensor], g: torch.Generator) -> Batch:
        classes = sorted(pool)
        pick = torch.randperm(len(classes), generator=g)[: self.ways].tolist()
        sx, sy, qx, qy = [], [], [], []
        for new_label, ci in enumerate(pick):
            rows = pool[classes[ci]]
            idx = torch.randperm(rows.shape[0], generator=g)[: self.shots + self.queries]
            sx.append(rows[idx[: self.shots]])
            qx.append(rows[idx[self.shots :]])
            sy += [new_label] * self.shots
            qy += [new_label] * self.queries
        return {
            "support": torch.cat(sx),
            "support_y": torch.tensor(sy, dtype=torch.long),
            "query": torch.cat(qx),
            "y": torch.tensor(qy, dtype=torch.long),
        }

    def batches(self, split: str, epoch: int = 0, rank: int = 0, world: int = 1) -> Iterator[Batch]:
        e = epoch if split == "train" else 0
        n = self.num_batches(split, world)
        for i in range(n):
            j = i * world + rank
            if split != "train" and j >= self.episodes[split]:
                break
            yield self._episode(self.pools[split], _generator(self.seed, SPLIT_IDS[split], e, j))
