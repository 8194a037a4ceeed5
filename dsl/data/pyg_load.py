"""Loading ``pyg(...)`` datasets: the class from ``torch_geometric.datasets``, offline, checked first.

Before the class is built, every ``.pt`` file under ``root`` must read with the
inert unpickler of :mod:`dsl.data.graphfiles` (only PyG ``Data`` records, tensors
and plain containers): PyG's own loader would fall back to full unpickling for a
file that ``weights_only=True`` refuses, so such a file is refused here first.
The class is built as a subclass whose ``download`` raises, so a dataset not on
disk is an error, never a download.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np
import torch

from dsl.data.base import GraphDataset
from dsl.data.files import DataError
from dsl.data.graphfiles import Meta, Plan
from dsl.data.loaders import _split_indices
from dsl.data.loading import LoaderDataset
from dsl.data.pyg import MASKS, SPLITS, PygParams, plan, read_static

MAX_FILES = 10_000  # .pt files checked under a root


def _dataset_class(name: str) -> Any:
    import torch_geometric.datasets as datasets
    from torch_geometric.data import Dataset

    cls = getattr(datasets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise DataError(f"torch_geometric.datasets.{name} is not a dataset class", name)
    return cls


def _check_files(root: str) -> None:
    """Refuse any ``.pt`` file under ``root`` that holds more than PyG data and tensors."""
    seen = 0
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".pt"):
                continue
            seen += 1
            path = os.path.join(folder, f)
            if seen > MAX_FILES:
                raise DataError(f"{root} holds over {MAX_FILES:,} .pt files", root)
            if read_static(path) is None:
                raise DataError(f"refused to load {path}: it holds objects other than PyG data and tensors "
                                "(or is not a torch zip file)", path)


def _no_download(self: Any) -> None:
    raise DataError(f"{type(self).__name__}: the files of this dataset are not in {self.raw_dir}; pyg() reads "
                    "datasets already on disk and never downloads", self.raw_dir)


def build(p: PygParams, split: str | None = None) -> Any:
    """An instance of the dataset class, offline."""
    cls = _dataset_class(p.cls)
    root = p.root_path()
    if root is not None:
        if not os.path.isdir(root):
            raise DataError(f"no folder {root}", root)
        _check_files(root)
    from torch_geometric.data import Dataset

    # A class with files to download gets a `download` that refuses; one without (KarateClub) stays as it is.
    offline = cls if cls.download is Dataset.download else type(
        cls.__name__, (cls,), {"download": _no_download, "__module__": cls.__module__})
    kwargs = p.kwargs
    if split is not None:
        kwargs["split"] = split
    takes_root = "root" in inspect.signature(cls.__init__).parameters
    try:
        return offline(root=root, **kwargs) if takes_root and root is not None else offline(**kwargs)
    except DataError:
        raise
    except (TypeError, ValueError, OSError, RuntimeError, KeyError, IndexError) as exc:
        raise DataError(f"{p.cls}(...) failed: {type(exc).__name__}: {exc}", root or p.cls) from None


def load_pyg(p: PygParams, seed: int) -> Any:
    s = seed if p.seed is None else p.seed
    own = "split" in inspect.signature(_dataset_class(p.cls).__init__).parameters and "split" not in p.kwargs
    parts = {name: build(p, name) for name in SPLITS} if own else {"all": build(p)}
    first = next(iter(parts.values()))
    if len(parts) == 1 and len(first) == 1:
        return _one_graph(first[0], s)
    shaped = plan(*_collated_metas(first), p.cls)
    assert isinstance(shaped, Plan)
    if own:
        splits = parts
    else:
        labels = _graph_labels(first, shaped)
        idx = _split_indices(len(first), labels, p.val, p.test, s)
        splits = {name: first.index_select(torch.as_tensor(i, dtype=torch.long)) for name, i in idx.items()}
    from torch_geometric.loader import DataLoader

    return LoaderDataset(splits, p.batch, s, kind="graphs", loader=DataLoader,
                         convert=lambda b: _fields(b, shaped))


def _metas(tensors: dict[str, Any]) -> dict[str, Meta]:
    out = {}
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor) and not v.is_complex():
            dtype = "float" if v.is_floating_point() else "bool" if v.dtype == torch.bool else "long"
            out[k] = Meta(tuple(v.shape), dtype)
    return out


def _collated_metas(ds: Any) -> tuple[dict[str, Meta], int]:
    """Shapes of the dataset's storage (all graphs' tensors concatenated) and its number of graphs."""
    data = getattr(ds, "_data", None)
    if data is not None and getattr(ds, "slices", None) is not None:
        return _metas(data.to_dict()), len(ds)
    from torch_geometric.data import Batch

    batch = Batch.from_data_list([ds[i] for i in range(len(ds))])
    return _metas({k: batch[k] for k in batch.keys() if k not in ("batch", "ptr")}), len(ds)  # noqa: SIM118


def _graph_labels(ds: Any, shaped: Plan) -> np.ndarray | None:
    level = shaped.fields.get("y")
    if level is None or level[0] != "graph" or level[1] or level[2] != "long":
        return None
    return ds.y.reshape(-1).numpy() if getattr(ds, "_data", None) is not None else None


def _fields(batch: Any, shaped: Plan) -> dict[str, torch.Tensor]:
    cast = {"float": torch.float32, "long": torch.long, "bool": torch.bool}
    out = {name: batch[name].to(cast[dtype]) for name, (_, _, dtype) in shaped.fields.items()}
    out["batch"] = batch.batch.long()
    return out


def _one_graph(data: Any, seed: int) -> GraphDataset:
    """A node-level dataset: its graph with train/val/test masks (its own, or drawn)."""
    fields = plan(_metas({k: data[k] for k in data.keys()}), None, "the graph")  # noqa: SIM118
    assert isinstance(fields, dict)
    out = {k: data[k] for k in fields if k not in MASKS}
    out["x"] = out["x"].float()
    out["edge_index"] = out["edge_index"].long()
    n = int(out["x"].shape[0])
    masks = [data[m] if m in data and data[m].dim() == 1 and data[m].numel() == n else None for m in MASKS]
    if any(m is None for m in masks):
        y = data["y"] if "y" in data and data["y"].dim() == 1 and data["y"].numel() == n else None
        idx = _split_indices(n, y.numpy() if y is not None else None, 0.2, 0.2, seed)
        masks = [torch.zeros(n, dtype=torch.bool).index_fill_(0, torch.as_tensor(idx[s], dtype=torch.long), True)
                 for s in SPLITS]
    out.update({name: m.bool() for name, m in zip(MASKS, masks, strict=True)})
    return GraphDataset(out)
