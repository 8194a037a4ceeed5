"""``pyg(cls, root=..., **kwargs)``: a PyTorch Geometric dataset class on files already on disk.

``pyg("TUDataset", root="data", name="MUTAG")`` builds
``torch_geometric.datasets.TUDataset(root="data", name="MUTAG")``; only classes
that ``torch_geometric.datasets`` exports are accepted (read from its
``__init__.py`` without importing it), and nothing is downloaded: a dataset
whose files are missing is an error that says so.

Declared without torch: the processed file (``<root>[/<name>]/processed/*.pt``,
written by PyG's ``InMemoryDataset.save``) is read with the inert unpickler of
:mod:`dsl.data.graphfiles`, which records shapes and constructs nothing.

* **One graph** (node-level tasks, Planetoid-like): the graph's fields with
  their sizes, plus ``train_mask``, ``val_mask`` and ``test_mask`` [N] bool:
  the dataset's own masks when it has them, else 60/20/20 of the nodes,
  stratified by ``y`` and seeded.
* **Many graphs** (graph-level tasks, TUDataset-like): fields as ``graphs()``
  gives them (``x`` [N, F], ``edge_index`` [2, E], ``batch`` [N], ``y`` [G] or
  [N], other attributes by level), batched by PyG's ``DataLoader``. A class
  taking ``split=`` (ZINC) gives its own train/val/test; otherwise the graphs
  are split 60/20/20, stratified by a graph-level ``y``.

When the processed file cannot be read statically (not processed yet, another
layout), the fields are checked when training loads the data.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import os
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from dsl.data.files import DataError
from dsl.data.graphfiles import Meta, Plan, _mapping, _pickle_bytes, _StaticUnpickler
from dsl.data.params import SplitParams
from dsl.data.registry import Source, register_source
from dsl.language.diagnostics import did_you_mean
from dsl.language.shapes import TensorType

SKIPPED = ("pre_transform.pt", "pre_filter.pt")
MASKS = ("train_mask", "val_mask", "test_mask")
SPLITS = ("train", "val", "test")


class PygParams(SplitParams):
    """Arguments of ``pyg(...)``; any other keyword goes to the dataset class (``name="MUTAG"``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    cls: str = Field(description="a dataset class of torch_geometric.datasets, e.g. \"TUDataset\"")
    root: str | None = Field(None, description="the folder holding its raw/ and processed/ files")
    batch: int = Field(32, gt=0, description="graphs per batch (many graphs)")

    @field_validator("cls")
    @classmethod
    def _known(cls, v: str) -> str:
        names = dataset_classes()
        if names and v not in names:
            hint = did_you_mean(v, names)
            raise ValueError(f"torch_geometric.datasets has no class `{v}`" + (f"; {hint}" if hint else ""))
        return v

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def root_path(self) -> str | None:
        if self.root is None:
            return None
        if os.path.isabs(self.root) or not self.base_dir or os.path.exists(self.root):
            return self.root
        return os.path.join(self.base_dir, self.root)


@functools.cache
def dataset_classes() -> tuple[str, ...]:
    """The names torch_geometric.datasets exports, read from its source (empty when not installed)."""
    spec = importlib.util.find_spec("torch_geometric")
    if spec is None or not spec.submodule_search_locations:
        return ()
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "__init__.py")
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError):
        return ()
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("_datasets")
                                                for t in node.targets) and isinstance(node.value, ast.List):
            names += [e.value for e in node.value.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return tuple(sorted(names))


# --------------------------------------------------------------------------- static read


def processed_files(root: str, name: Any = None) -> list[str]:
    """The processed ``.pt`` files of a dataset under ``root`` (``<root>/<name>/processed`` first)."""
    folders = [os.path.join(root, str(name), "processed")] if isinstance(name, str) else []
    folders.append(os.path.join(root, "processed"))
    for folder in folders:
        if os.path.isdir(folder):
            return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                          if f.endswith(".pt") and f not in SKIPPED)
    return []


def read_static(path: str) -> Any:
    """The pickled object of a torch file with every tensor as a :class:`Meta`; None when unreadable."""
    raw = _pickle_bytes(path)
    if raw is None:
        return None
    try:
        return _StaticUnpickler(io.BytesIO(raw)).load()
    except Exception:  # any failure of the inert read means "not a PyG dataset file we can read"
        return None


def collated(obj: Any) -> tuple[dict[str, Meta], int | None] | None:
    """(tensor shapes of the collated storage, number of graphs or None for one graph) of an
    ``InMemoryDataset`` file: ``(data dict, slices[, sizes], Data class)`` or the older ``(Data, slices)``."""
    if not isinstance(obj, tuple) or len(obj) not in (2, 3, 4):
        return None
    data, slices = obj[0], obj[1]
    mapping = data if isinstance(data, dict) else _mapping(data)
    if mapping is None:
        return None
    metas = {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, Meta)}
    if slices is None:
        return metas, None
    if not isinstance(slices, dict) or not isinstance(slices.get("x"), Meta):
        return None
    return metas, slices["x"].shape[0] - 1


def plan(metas: dict[str, Meta], graphs: int | None, path: str) -> Plan | dict[str, TensorType]:
    """A :class:`Plan` of a graph list, or the concrete fields of one graph."""
    x, ei = metas.get("x"), metas.get("edge_index")
    if x is None or not x.shape or ei is None or len(ei.shape) != 2 or ei.shape[0] != 2:
        raise DataError(f"{path}: the graphs need node features `x` and an `edge_index` [2, E]", path)
    nodes, edges = x.shape[0], ei.shape[1]
    if graphs is None:
        out = {"x": TensorType(x.shape, "float"), "edge_index": TensorType((2, edges), "long")}
        for k, m in metas.items():
            if k not in out and "index" not in k and m.shape and m.shape[0] in (nodes, edges):
                out[k] = TensorType(m.shape, "bool" if k in MASKS else m.dtype)
        for mask in MASKS:
            out[mask] = TensorType((nodes,), "bool")
        return out
    fields: dict[str, tuple[str, tuple[int, ...], str]] = {"edge_index": ("edge_index", (), "long")}
    for k, m in metas.items():
        if k == "edge_index" or "index" in k or "face" in k or not m.shape:
            continue
        level = "node" if m.shape[0] == nodes else "edge" if m.shape[0] == edges else (
            "graph" if m.shape[0] == graphs else None)
        if level is not None:
            fields[k] = (level, m.shape[1:], m.dtype)
    return Plan(fields)


def describe(p: PygParams) -> dict[str, TensorType] | None:
    """The declared fields; None when they are known only once the dataset is loaded."""
    root = p.root_path()
    if root is None:
        return None
    if not os.path.isdir(root):
        raise FileNotFoundError(root)
    files = processed_files(root, p.kwargs.get("name"))
    if not files:
        return None
    first = next((f for f in files if os.path.basename(f) in ("data.pt", "train.pt")), files[0])
    found = collated(read_static(first))
    if found is None:
        return None
    shaped = plan(found[0], found[1], first)
    return shaped.types() if isinstance(shaped, Plan) else shaped


# --------------------------------------------------------------------------- the source


def _load(p: PygParams, seed: int) -> Any:
    from dsl.data.pyg_load import load_pyg

    return load_pyg(p, seed)


register_source(
    Source(
        "pyg",
        "graphs",
        PygParams,
        describe,
        _load,
        doc="a dataset class of torch_geometric.datasets on files already on disk (never downloaded): "
        "pyg(\"TUDataset\", root=\"data\", name=\"MUTAG\"); one graph gives its fields and train/val/test "
        "masks (its own, else 60/20/20 of the nodes), many graphs are batched by PyG's DataLoader as "
        "graphs() batches them (own splits with split=, else 60/20/20)",
        positional=("cls",),
    )
)
