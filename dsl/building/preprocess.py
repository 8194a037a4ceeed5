"""A compiled model behind its run's input preprocessing: raw inputs in, the model's outputs out.

:func:`with_preprocessing` wraps a model in a ``torch.fx.GraphModule`` whose ``forward``
takes the model's inputs by name, standardises the fields the run standardised
(:class:`Standardize`, the statistics as buffers) and calls the model. It is a plain
module: ``torch.export`` and the ONNX exporter trace it like the model, so the exported
program takes raw inputs too, and its state dict is the model's (under ``model.``) plus
the statistics (under ``preprocess.``). Categorical vocabularies map strings to indices
before any tensor exists, so they stay outside (written beside an export).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from dsl.building.compiler import preserve_attribute
from dsl.data.preprocess import Preprocessing
from dsl.language.errors import InputError

PREPROCESS = "preprocess"
MODEL = "model"


class Standardize(nn.Module):
    """``(x - mean) / std`` with the training split's statistics (buffers ``mean`` and ``std``)."""

    def __init__(self, field: str, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.field = field
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            self._check(x)
        return (x - self.mean) / self.std

    def _check(self, x: torch.Tensor) -> None:
        stats = tuple(self.mean.shape)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise InputError(f"input `{self.field}` must be a float tensor, got "
                             f"{x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}", self.field)
        if x.dim() < len(stats) or any(s not in (1, d) for s, d in zip(stats, x.shape[x.dim() - len(stats):],
                                                                       strict=True)):
            hint = ""
            if len(stats) > 2 and x.dim() < len(stats):  # flat rows (a CSV) where images belong
                hint = (f"; give it images of rank {len(stats)}, [N, {stats[1]}, H, W] (a table row is flat: "
                        "use an .npz or .pt array of that shape)")
            raise InputError(f"input `{self.field}` is {list(x.shape)} but training standardised {_what(stats)} "
                             f"(statistics of shape {list(stats)}){hint}", self.field, expected=stats,
                             actual=tuple(x.shape))


def _what(stats: tuple[int, ...]) -> str:
    """What statistics of this shape scale: "64 features", or "images [1, _, _]" (per channel)."""
    if len(stats) <= 2:
        return f"{stats[-1]} features"
    return "images [" + ", ".join("_" if i else str(n) for i, n in enumerate(stats[1:])) + "]"


def standardizers(prep: Preprocessing, like: torch.Tensor | None = None) -> nn.ModuleDict:
    """One :class:`Standardize` per standardised field, on ``like``'s dtype and device."""
    dtype = like.dtype if like is not None else torch.float32
    device = like.device if like is not None else None
    out = nn.ModuleDict()
    for name, s in prep.standardize.items():
        mean = torch.tensor(s.mean, dtype=dtype, device=device).reshape(s.shape)
        std = torch.tensor(s.std, dtype=dtype, device=device).reshape(s.shape)
        out[name] = Standardize(name, mean, std)
    return out


def input_order(model: fx.GraphModule) -> list[str]:
    return [n.target for n in model.graph.nodes if n.op == "placeholder"]


def with_preprocessing(model: fx.GraphModule, prep: Preprocessing) -> fx.GraphModule:
    """``model`` behind ``prep``'s standardisation; ``model`` itself when nothing is standardised.

    The wrapper keeps the model's input names (``wrapper(x=raw)``), its outputs and its
    ``dsl_*`` attributes, and holds ``prep`` as ``dsl_preprocessing``."""
    names = input_order(model)
    unused = sorted(set(prep.standardize) - set(names))
    prep = prep.model_copy(update={"standardize": {k: v for k, v in prep.standardize.items() if k not in unused}})
    if not prep.standardize:
        preserve_attribute(model, "dsl_preprocessing", prep)
        return model
    root = nn.Module()
    root.add_module(MODEL, model)
    root.add_module(PREPROCESS, standardizers(prep, next(iter(model.parameters()), None)))
    graph = fx.Graph()
    args: dict[str, Any] = {}
    for name in names:
        node = graph.placeholder(name)
        args[name] = graph.call_module(f"{PREPROCESS}.{name}", (node,)) if name in prep.standardize else node
    graph.output(graph.call_module(MODEL, (), args))
    wrapper = fx.GraphModule(root, graph, class_name=f"Trained{type(model).__name__}")
    for key in ("dsl_outputs", "dsl_spec", "dsl_aux_weights"):
        if hasattr(model, key):
            preserve_attribute(wrapper, key, getattr(model, key))
    preserve_attribute(wrapper, "dsl_preprocessing", prep)
    return wrapper
