"""Graph lists from ``.pt`` files: ``graphs("mols.pt")``, a list of PyG ``Data`` objects.

A file saved with ``torch.save([Data(x=..., edge_index=..., y=...), ...], path)``
becomes batches collated the way PyG's ``Batch.from_data_list`` does: node rows
concatenated, ``edge_index`` offset by the nodes before it, a ``batch`` vector
naming each node's graph, graph-level values (``y`` of shape ``[]`` or
``[1, ...]`` per graph) one row per graph.

Static fields. ``dsl check`` must know the fields without torch, so
:func:`graph_fields` reads the pickle inside the file (``<name>/data.pkl`` of the
zip that ``torch.save`` writes) with an unpickler that constructs nothing real:
the only globals it resolves are PyG's ``Data`` and its storage classes, torch's
tensor-rebuild function and storage types, and ``OrderedDict`` — each mapped to
an inert stand-in that records a shape and a dtype. Any other global makes the
static read give up (fields unknown until training starts), never execute.

Loading. :func:`load_graph_file` uses ``torch.load(weights_only=True)`` and
allows exactly the PyG classes a ``Data`` pickle names, for the duration of that
one call (``torch.serialization.safe_globals``), not process-wide.

Field levels follow PyG's defaults (``Data.__cat_dim__``/``__inc__``):
``edge_index`` is ``[2, E] long``; a tensor whose first axis has the graph's node
count in every graph is node-level ``[N, ...]``, the edge count edge-level
``[E, ...]``, one row (or a 0-d value) graph-level ``[G, ...]``. Other keys
holding an index (``face``, ``*_index``), tensors whose first axis fits no
level, and non-tensor attributes are left out.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dsl.data.files import DataError
from dsl.language.shapes import Sym, TensorType

MAX_PICKLE_BYTES = 256 * 2**20  # larger metadata is checked when training loads the file
_FLOAT_STORAGES = {"FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage"}
_INT_STORAGES = {"LongStorage", "IntStorage", "ShortStorage", "CharStorage", "ByteStorage"}
_PYG_DATA = ("torch_geometric.data.data", "Data")
_PYG_MARKERS = {("torch_geometric.data.data", "DataEdgeAttr"), ("torch_geometric.data.data", "DataTensorAttr")}
_PYG_STORAGE = ("torch_geometric.data.storage", "GlobalStorage")


# --------------------------------------------------------------------------- shapes of one graph


@dataclass(frozen=True)
class Meta:
    """What the field plan needs of a tensor: its shape and its dsl dtype."""

    shape: tuple[int, ...]
    dtype: str  # float | long | bool


@dataclass(frozen=True)
class Plan:
    """The fields of a graph list: name -> (level, trailing shape, dtype).

    ``level`` is ``edge_index``, ``node``, ``edge`` or ``graph``.
    """

    fields: dict[str, tuple[str, tuple[int, ...], str]]

    def types(self) -> dict[str, TensorType]:
        sym = {"node": Sym("N"), "edge": Sym("E"), "graph": Sym("G")}
        out: dict[str, TensorType] = {}
        for name, (level, rest, dtype) in self.fields.items():
            if level == "edge_index":
                out[name] = TensorType((2, Sym("E")), "long")
            else:
                out[name] = TensorType((sym[level], *rest), dtype)
        out["batch"] = TensorType((Sym("N"),), "long")
        return out


def plan_fields(graphs: Sequence[dict[str, Meta | None]], path: str) -> Plan:
    """Classify every attribute of the graphs (their tensors' shapes) as PyG collates them."""
    if not graphs:
        raise DataError(f"{path} holds an empty list of graphs", path)
    for i, g in enumerate(graphs):
        x, ei = g.get("x"), g.get("edge_index")
        if x is None or len(x.shape) < 1:
            raise DataError(f"graph {i} of {path} has no node features `x` (a tensor [nodes, features])", path)
        if ei is None or len(ei.shape) != 2 or ei.shape[0] != 2 or ei.dtype != "long":
            raise DataError(f"graph {i} of {path} has no `edge_index` of shape [2, edges] and integer dtype", path)
    keys = [k for k in graphs[0] if k not in ("batch", "ptr")]
    fields: dict[str, tuple[str, tuple[int, ...], str]] = {"edge_index": ("edge_index", (), "long")}
    for key in keys:
        if key == "edge_index" or "index" in key or "face" in key:
            continue
        level = _level(key, graphs)
        if level is not None:
            fields[key] = level
    if fields.get("x", ("",))[0] != "node":
        raise DataError(f"the node features `x` of {path} differ in width or rank between graphs", path)
    return Plan(fields)


def _level(key: str, graphs: Sequence[dict[str, Meta | None]]) -> tuple[str, tuple[int, ...], str] | None:
    metas = [g.get(key) for g in graphs]
    if any(m is None for m in metas):
        return None  # missing in some graph, or not a tensor
    first = metas[0]
    assert first is not None
    if any(m is not None and (m.dtype != first.dtype or m.shape[1:] != first.shape[1:]) for m in metas):
        return None
    if not first.shape:
        return ("graph", (), first.dtype) if all(m is not None and not m.shape for m in metas) else None
    rest = first.shape[1:]
    rows = [m.shape[0] for m in metas if m is not None]
    nodes = [g["x"].shape[0] for g in graphs if g.get("x") is not None]  # type: ignore[union-attr]
    edges = [g["edge_index"].shape[1] for g in graphs if g.get("edge_index") is not None]  # type: ignore[union-attr]
    if rows == nodes:
        return ("node", rest, first.dtype)
    if rows == edges:
        return ("edge", rest, first.dtype)
    if all(r == 1 for r in rows):
        return ("graph", rest, first.dtype)
    return None


# --------------------------------------------------------------------------- static read (no torch)


class _Inert:
    """Stands in for an allowed PyG object; keeps the pickled state, runs nothing."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _DataStub(_Inert):
    pass


class _StorageStub(_Inert):
    pass


class _Marker:
    """A class the pickle names as a value (``DataEdgeAttr``), never called."""


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    dtype: str


def _rebuild_tensor(storage: Any, offset: Any, size: Any, *rest: Any) -> Meta:
    if not isinstance(storage, _Storage) or not isinstance(size, tuple):
        raise pickle.UnpicklingError("unexpected tensor record")
    return Meta(tuple(int(s) for s in size), storage.dtype)


class _StaticUnpickler(pickle.Unpickler):
    """Resolves only the globals of a PyG ``Data`` list, each to an inert stand-in."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _PYG_DATA:
            return _DataStub
        if (module, name) == _PYG_STORAGE:
            return _StorageStub
        if (module, name) in _PYG_MARKERS:
            return _Marker
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name in _FLOAT_STORAGES:
            return _StorageType("float")
        if module == "torch" and name in _INT_STORAGES:
            return _StorageType("long")
        if module == "torch" and name == "BoolStorage":
            return _StorageType("bool")
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a PyG graph list")

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "storage" and isinstance(pid[1], _StorageType):
            return _Storage(pid[1].dtype)
        raise pickle.UnpicklingError("unexpected persistent record")


def _pickle_bytes(path: str) -> bytes | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(names) != 1 or zf.getinfo(names[0]).file_size > MAX_PICKLE_BYTES:
                return None
            return zf.read(names[0])
    except (zipfile.BadZipFile, OSError):
        return None  # the legacy (non-zip) torch format: checked at load time


def _mapping(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, _DataStub) or not isinstance(obj.state, dict):
        return None
    store = obj.state.get("_store")
    if not isinstance(store, _StorageStub) or not isinstance(store.state, dict):
        return None
    mapping = store.state.get("_mapping")
    return mapping if isinstance(mapping, dict) else None


def read_graph_metas(path: str) -> list[dict[str, Meta | None]] | None:
    """Per graph, each attribute's shape and dtype (None for non-tensors); None when
    the file cannot be read statically (a legacy format, foreign objects, too large)."""
    raw = _pickle_bytes(path)
    if raw is None:
        return None
    try:
        obj = _StaticUnpickler(io.BytesIO(raw)).load()
    except Exception:  # noqa: BLE001 - any failure of the inert read means "check at load time"
        return None
    if not isinstance(obj, (list, tuple)):
        return None
    graphs = []
    for item in obj:
        mapping = _mapping(item)
        if mapping is None:
            return None
        graphs.append({k: (v if isinstance(v, Meta) else None) for k, v in mapping.items() if isinstance(k, str)})
    return graphs


def graph_fields(p: Any) -> dict[str, TensorType] | None:
    """The batch fields of ``graphs(path)``, read without torch (None: known at load time)."""
    from dsl.data.checks import open_data
    from dsl.data.files import resolve_path

    path = resolve_path(p)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    open_data(path).close()  # a regular file, or a DataError now (a FIFO would block the zip reader)
    metas = read_graph_metas(path)
    if metas is None:
        return None
    return plan_fields(metas, path).types()


# --------------------------------------------------------------------------- loading (torch)


def _read_graph_list(path: str) -> list[Any]:
    import torch
    from torch_geometric.data import Data
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    from dsl.data.checks import check_tensors, read_data

    data = read_data(path)
    try:
        # Exactly the classes a pickled `Data` names, and only for this call.
        with torch.serialization.safe_globals([Data, DataEdgeAttr, DataTensorAttr, GlobalStorage]):
            obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise DataError(f"refused to load {path}: it holds objects other than PyG `Data` graphs and tensors "
                        f"({str(exc).splitlines()[-1][:200]})", path) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable torch file ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(obj, (list, tuple)) or not all(type(g) is Data for g in obj):
        raise DataError(f"{path} holds a {type(obj).__name__}; graphs() needs a list of torch_geometric Data", path)
    check_tensors({f"{k}` of graph `{i}": v for i, g in enumerate(obj) for k, v in g.items()
                   if isinstance(v, torch.Tensor)}, path, len(data))
    return list(obj)


def _meta(v: Any) -> Meta | None:
    import torch

    if not isinstance(v, torch.Tensor) or v.is_complex():
        return None
    dtype = "float" if v.is_floating_point() else "bool" if v.dtype == torch.bool else "long"
    return Meta(tuple(v.shape), dtype)


def load_graph_file(p: Any, seed: int) -> Any:
    """A :class:`~dsl.data.base.ListDataset` of the file's graphs, split and collated."""
    import numpy as np

    from dsl.data.base import ListDataset
    from dsl.data.checks import check_rows
    from dsl.data.files import resolve_path
    from dsl.data.loaders import _split_indices

    path = resolve_path(p)
    graphs, plan = _read_checked(path)
    s = seed if p.seed is None else p.seed
    check_rows(len(graphs), p.val, p.test, path, "graphs")
    labels = _graph_labels(graphs, plan)
    idx = _split_indices(len(graphs), labels, p.val, p.test, s)
    splits = {name: [graphs[int(i)] for i in np.asarray(rows)] for name, rows in idx.items()}
    return ListDataset(splits, p.batch, s, lambda items: collate(items, plan), kind="graphs")


def graph_batches(path: str, batch: int) -> list[dict[str, Any]]:
    """Every graph of a graph-list file, in order, collated ``batch`` graphs at a time (``dsl predict``)."""
    graphs, plan = _read_checked(path)
    return [collate(graphs[i:i + batch], plan) for i in range(0, len(graphs), batch)]


def _read_checked(path: str) -> tuple[list[Any], Plan]:
    """The graphs of ``path`` and their field plan; finite features, edges inside each graph."""
    import torch

    graphs = _read_graph_list(path)
    plan = plan_fields([{k: _meta(g[k]) for k in g.keys()} for g in graphs], path)  # noqa: SIM118 - Data.keys()
    for i, g in enumerate(graphs):
        bad = ~torch.isfinite(g.x) if g.x.is_floating_point() else None
        if bad is not None and bool(bad.any()):
            raise DataError(f"graph {i} of {path} has non-finite node features", path)
        if g.edge_index.numel() and (int(g.edge_index.min()) < 0 or int(g.edge_index.max()) >= g.x.shape[0]):
            raise DataError(f"graph {i} of {path}: edge_index names a node outside 0..{g.x.shape[0] - 1}", path)
    return graphs, plan


def _graph_labels(graphs: list[Any], plan: Plan) -> Any:
    """Graph-level integer ``y`` (one per graph) to stratify the split by, else None."""
    import numpy as np

    level = plan.fields.get("y")
    if level is None or level[0] != "graph" or level[1] or level[2] != "long":
        return None
    return np.array([int(g.y.reshape(-1)[0]) for g in graphs])


def collate(items: list[Any], plan: Plan) -> dict[str, Any]:
    """PyG batching (``Batch.from_data_list``), then the planned fields as dsl dtypes."""
    import torch
    from torch_geometric.data import Batch

    b = Batch.from_data_list(items)
    cast = {"float": torch.float32, "long": torch.long, "bool": torch.bool}
    out = {name: b[name].to(cast[dtype]) for name, (_, _, dtype) in plan.fields.items()}
    out["batch"] = b.batch.long()
    return out
