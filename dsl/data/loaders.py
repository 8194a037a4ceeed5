"""Loading and generating the built-in sources (imports torch, numpy, scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import EpisodeDataset, GraphDataset, ListDataset, TableDataset, collate_graphs, pad_bags


def _split_indices(n: int, y: np.ndarray | None, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded train/val/test indices, stratified by label when every class allows it."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)

    def cut(ids: np.ndarray, frac: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
        strat = y[ids] if y is not None else None
        try:
            a, b = train_test_split(ids, test_size=frac, random_state=seed + salt, stratify=strat)
        except ValueError:  # a class too small to stratify: plain random split
            a, b = train_test_split(ids, test_size=frac, random_state=seed + salt)
        return np.sort(a), np.sort(b)

    rest, test_idx = cut(idx, test, 0)
    if val > 0:
        train_idx, val_idx = cut(rest, val / (1 - test), 1)
    else:
        train_idx, val_idx = rest, rest[:0]
    return {"train": train_idx, "val": val_idx, "test": test_idx}


def split_table(tensors: dict[str, torch.Tensor], p: Any, seed: int) -> TableDataset:
    n = int(next(iter(tensors.values())).shape[0])
    y = tensors.get("y")
    labels = y.numpy() if y is not None and y.dtype == torch.long and y.dim() == 1 else None
    idx = _split_indices(n, labels, p.val, p.test, seed)
    splits = {s: {k: v[torch.from_numpy(i)] for k, v in tensors.items()} for s, i in idx.items()}
    if p.standardize:
        _standardize(splits)
    return TableDataset(splits, p.batch, seed)


def _standardize(splits: dict[str, dict[str, torch.Tensor]]) -> None:
    # Statistics from the training split only, so val/test stay unseen.
    for k, v in splits["train"].items():
        if not v.is_floating_point():
            continue
        mean = v.mean(0, keepdim=True)
        std = v.std(0, keepdim=True).nan_to_num(1.0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        for s in splits:
            splits[s][k] = (splits[s][k] - mean) / std


def _sklearn_arrays(loader: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def load_sklearn(loader: str, p: Any, seed: int) -> TableDataset:
    x, y = _sklearn_arrays(loader)
    tensors = {"x": torch.from_numpy(x), "y": torch.from_numpy(y)}
    return split_table(tensors, p, seed if p.seed is None else p.seed)


def _labelled_masks(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    train = torch.zeros_like(y, dtype=torch.bool)
    for c in y.unique().tolist():
        rows = (y == c).nonzero().flatten()
        pick = rows[torch.randperm(rows.numel(), generator=g)[:per_class]]
        train[pick] = True
    return train


def load_karate(p: Any, seed: int) -> GraphDataset:
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    s = seed if p.seed is None else p.seed
    train = _labelled_masks(data.y, p.per_class, s)
    return GraphDataset(
        {
            "x": data.x.float(),
            "edge_index": data.edge_index.long(),
            "y": data.y.long(),
            "train_mask": train,
            "test_mask": ~train,
        }
    )


def load_sbm(p: Any, seed: int) -> GraphDataset:
    s = seed if p.seed is None else p.seed
    g = torch.Generator().manual_seed(s)
    n = p.blocks * p.size
    y = torch.arange(p.blocks).repeat_interleave(p.size)
    prob = torch.where(y[:, None] == y[None, :], p.p_in, p.p_out)
    upper = (torch.rand(n, n, generator=g) < prob).triu(1)
    adj = upper | upper.T  # undirected: both directions
    edge_index = adj.nonzero().T.contiguous()
    centers = torch.randn(p.blocks, p.features, generator=g)
    x = centers[y] + p.noise * torch.randn(n, p.features, generator=g)
    train = _labelled_masks(y, p.per_class, s)
    rest = (~train).nonzero().flatten()
    rest = rest[torch.randperm(rest.numel(), generator=g)]
    val = torch.zeros(n, dtype=torch.bool)
    val[rest[: rest.numel() // 2]] = True
    return GraphDataset(
        {"x": x, "edge_index": edge_index, "y": y, "train_mask": train, "val_mask": val, "test_mask": ~train & ~val}
    )


def lookup_graph(k: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One DictionaryLookup graph: keys 0..k-1 then queries 0..k-1 (node ids)."""
    values = torch.randperm(k, generator=g)  # key i holds value values[i]
    order = torch.randperm(k, generator=g)  # query j asks for key order[j]
    eye = torch.eye(k)
    keys = torch.cat([eye, eye[values]], dim=1)
    queries = torch.cat([eye[order], torch.zeros(k, k)], dim=1)
    src = torch.arange(k).repeat(k)  # every key ...
    dst = k + torch.arange(k).repeat_interleave(k)  # ... to every query
    y = torch.cat([torch.zeros(k, dtype=torch.long), values[order]])
    mask = torch.cat([torch.zeros(k, dtype=torch.bool), torch.ones(k, dtype=torch.bool)])
    return {"x": torch.cat([keys, queries]), "edge_index": torch.stack([src, dst]), "y": y, "mask": mask}


def load_dictionary_lookup(p: Any, seed: int) -> ListDataset:
    s = seed if p.seed is None else p.seed
    counts = {"train": p.graphs, "val": p.eval_graphs, "test": p.eval_graphs}
    splits = {}
    for i, (name, n) in enumerate(counts.items()):
        g = torch.Generator().manual_seed(s * 7919 + i)
        splits[name] = [lookup_graph(p.k, g) for _ in range(n)]

    def collate(items: list) -> dict[str, torch.Tensor]:
        return collate_graphs(items, node_fields=("x", "y", "mask"))

    return ListDataset(splits, p.batch, s, collate, kind="graphs")


def _digits_by_split(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Standardised digit images split 60/20/20 (stratified), as tensors."""
    x, y = _sklearn_arrays("load_digits")
    idx = _split_indices(len(y), y, 0.2, 0.2, seed)
    xs = torch.from_numpy(x)
    mean, std = xs[idx["train"]].mean(0), xs[idx["train"]].std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    xs = (xs - mean) / std
    return {s: (xs[torch.from_numpy(i)], torch.from_numpy(y[i])) for s, i in idx.items()}


def load_mil_bags(p: Any, seed: int) -> ListDataset:
    s = seed if p.seed is None else p.seed
    parts = _digits_by_split(s)
    counts = {"train": p.bags, "val": p.eval_bags, "test": p.eval_bags}
    splits = {}
    for i, (name, n) in enumerate(counts.items()):
        g = torch.Generator().manual_seed(s * 7919 + i)
        x, y = parts[name]
        bags = []
        for _ in range(n):
            size = max(1, int(round(p.mean + p.std * float(torch.randn(1, generator=g)))))
            rows = torch.randint(0, x.shape[0], (size,), generator=g)
            bags.append((x[rows], int(bool((y[rows] == p.target).any()))))
        splits[name] = bags
    return ListDataset(splits, p.batch, s, pad_bags, kind="bags")


def load_episodes(p: Any, seed: int) -> EpisodeDataset:
    s = seed if p.seed is None else p.seed
    x, y = _sklearn_arrays("load_digits")
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    # Standardise with the training classes' statistics only.
    train_rows = ys < 5
    mean, std = xs[train_rows].mean(0), xs[train_rows].std(0)
    xs = (xs - mean) / torch.where(std > 0, std, torch.ones_like(std))
    g = torch.Generator().manual_seed(s)
    pools: dict[str, dict[int, torch.Tensor]] = {"train": {}, "val": {}, "test": {}}
    for c in range(10):
        rows = xs[ys == c]
        if c < 5:
            pools["train"][c] = rows
        else:
            rows = rows[torch.randperm(rows.shape[0], generator=g)]
            half = rows.shape[0] // 2
            pools["val"][c], pools["test"][c] = rows[:half], rows[half:]
    episodes = {"train": p.episodes, "val": p.eval_episodes, "test": p.eval_episodes}
    return EpisodeDataset(pools, p.ways, p.shots, p.queries, episodes, s)
