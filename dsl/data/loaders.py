"""Loading and generating the built-in sources (imports torch, numpy, scikit-learn).

Data files are untrusted input: ``.pt`` files are read with
``torch.load(weights_only=True)`` (no arbitrary unpickling), ``.npz`` with
``allow_pickle=False``, and every loaded field is validated (numeric dtype, one
row per entry in every field, finite floats) before training sees it. Problems
are :class:`~dsl.data.files.DataError`; :func:`load_data` turns them into
diagnostics (E0703).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dsl.data.base import (
    EpisodeDataset,
    GraphDataset,
    ListDataset,
    TableDataset,
    collate_graphs,
    pad_bags,
)
from dsl.data.files import DataError


def load_data(cfg: Any) -> Any:
    """``cfg.source.load(...)`` with data problems reported as diagnostics: at
    the line and column of a text file, else at the spec's ``data = ...``."""
    from dsl.language.diagnostics import Diagnostic
    from dsl.language.errors import SpecError

    try:
        return cfg.source.load(cfg.source_params, cfg.seed)
    except DataError as exc:
        raise SpecError([Diagnostic(exc.code, exc.message, exc.span or cfg.data_span)]) from None
    except FileNotFoundError as exc:  # a run's data moved or deleted since it trained
        raise SpecError([Diagnostic("E0702", f"data file not found: {exc.filename or exc}", cfg.data_span)]) from None


def read_pt(path: str, same_rows: bool = True) -> dict[str, torch.Tensor]:
    """A dict of tensors saved with ``torch.save``; anything needing arbitrary
    unpickling is refused by ``weights_only=True``."""
    import io
    import pickle
    import re
    import warnings

    from dsl.data.checks import check_tensors, read_data

    data = read_data(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of hostile files
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it refers to {found.group(1)})" if found else ""
        raise DataError(f"refused to load {path}: it holds Python objects, not only tensors{what}; "
                        "data files are read with weights_only=True", path) from None
    except (RuntimeError, EOFError, OSError, ValueError, MemoryError, IndexError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a readable torch file ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{path} holds a {type(obj).__name__}; a .pt data file is a dict of tensors by field name",
                        path)
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise DataError(f"{path}: field name {k!r} is not an identifier", path)
        try:
            out[k] = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise DataError(f"field `{k}` of {path} is not a tensor ({type(v).__name__}: {exc})", path) from None
    check_tensors(out, path, len(data))
    return validate_fields(out, path, same_rows)


def read_npz(path: str, same_rows: bool = True) -> dict[str, torch.Tensor]:
    """The arrays of an ``.npz`` (no pickled objects), as float/long/bool tensors."""
    import io

    from dsl.data.checks import read_data

    out: dict[str, torch.Tensor] = {}
    try:
        from dsl.data.files import npz_headers

        npz_headers(path)  # the headers against the archive, before numpy allocates what they declare
        with np.load(io.BytesIO(read_data(path)), allow_pickle=False) as z:
            for k in z.files:
                a = z[k]
                if a.dtype.kind not in "fiub":
                    raise DataError(f"field `{k}` of {path} has dtype {a.dtype}; fields must be float, integer "
                                    "or bool arrays", path)
                t = torch.from_numpy(np.ascontiguousarray(a))
                out[k] = t.float() if a.dtype.kind == "f" else (t.bool() if a.dtype.kind == "b" else t.long())
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError) as exc:  # object arrays need pickle: refused
        raise DataError(f"{path} is not a readable .npz of numeric arrays ({type(exc).__name__}: {exc})",
                        path) from None
    return validate_fields(out, path, same_rows)


def validate_fields(fields: dict[str, torch.Tensor], path: str, same_rows: bool = True) -> dict[str, torch.Tensor]:
    """Numeric dtypes, a first axis of rows (shared by all fields unless not ``same_rows``), finite floats."""
    rows: dict[str, int] = {}
    for k, t in fields.items():
        if t.is_complex():
            raise DataError(f"field `{k}` of {path} has dtype {t.dtype}; fields must be float, integer or bool", path)
        if t.dim() == 0:
            raise DataError(f"field `{k}` of {path} is a scalar; every field needs a first axis of rows", path)
        rows[k] = int(t.shape[0])
        if t.is_floating_point():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                index = tuple(int(i) for i in bad.nonzero()[0])
                value = t[index].item()
                raise DataError(f"field `{k}` of {path} holds {value} at index {list(index)}; "
                                "data must be finite numbers (no NaN or infinity)", path)
    if same_rows and len(set(rows.values())) > 1:
        listed = ", ".join(f"`{k}` {v}" for k, v in rows.items())
        raise DataError(f"the fields of {path} have different numbers of rows ({listed}); "
                        "every field needs one entry per row", path)
    return fields


def _split_indices(n: int, y: np.ndarray | None, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded train/val/test indices, stratified by label when every class allows it."""
    from sklearn.model_selection import train_test_split

    from dsl.data.checks import check_rows

    idx = np.arange(n)

    def cut(ids: np.ndarray, frac: float, salt: int) -> tuple[np.ndarray, np.ndarray]:
        strat = y[ids] if y is not None else None
        try:
            a, b = train_test_split(ids, test_size=frac, random_state=seed + salt, stratify=strat)
        except ValueError:  # a class too small to stratify: plain random split
            a, b = train_test_split(ids, test_size=frac, random_state=seed + salt)
        return np.sort(a), np.sort(b)

    check_rows(n, val, test, "the data")  # sources whose files check_rows has not seen (a .pt, a folder)
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
    scaling = _standardize(splits) if p.standardize else {}
    dataset = TableDataset(splits, p.batch, seed)
    dataset.scaling = scaling  # `dsl predict` scales new inputs the same way
    return dataset


def _standardize(splits: dict[str, dict[str, torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Scale float fields in place; return each field's (mean, std).

    Columns of a table [N, F] are scaled one by one; images [N, C, H, W] one
    channel at a time (every pixel of a channel shares its statistics, as
    torchvision's ``Normalize``), so a shifted digit is scaled like the original.
    """
    # Statistics from the training split only, so val/test stay unseen.
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, v in splits["train"].items():
        if not v.is_floating_point():
            continue
        dims = (0, 2, 3) if v.dim() == 4 else (0,)
        mean = v.mean(dims, keepdim=True)
        std = v.std(dims, keepdim=True).nan_to_num(1.0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        stats[k] = (mean, std)
        for s in splits:
            splits[s][k] = (splits[s][k] - mean) / std
    return stats


def _sklearn_arrays(loader: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader)()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def load_sklearn(loader: str, p: Any, seed: int) -> TableDataset:
    x, y = _sklearn_arrays(loader)
    tensors = {"x": torch.from_numpy(x), "y": torch.from_numpy(y)}
    if getattr(p, "images", False):  # digits' 64 columns are an 8x8 image, one channel
        tensors["x"] = tensors["x"].reshape(-1, 1, 8, 8)
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
    val = _half_of_the_rest(train, s)
    return GraphDataset(
        {
            "x": data.x.float(),
            "edge_index": data.edge_index.long(),
            "y": data.y.long(),
            "train_mask": train,
            "val_mask": val,
            "test_mask": ~train & ~val,
        }
    )


def _half_of_the_rest(train: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded half of the nodes outside ``train``: the validation mask."""
    g = torch.Generator().manual_seed(seed + 1)
    rest = (~train).nonzero().flatten()
    rest = rest[torch.randperm(rest.numel(), generator=g)]
    val = torch.zeros_like(train)
    val[rest[: rest.numel() // 2]] = True
    return val


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
    # Standardise with the training classes' statistics only: per pixel, or per channel for images.
    train_rows = ys < 5
    if getattr(p, "images", False):
        xs = xs.reshape(-1, 1, 8, 8)
        mean, std = xs[train_rows].mean(), xs[train_rows].std()
        xs = (xs - mean) / std
    else:
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
