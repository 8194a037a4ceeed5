"""The data-source registry. Pure Python: declaring a source imports no torch.

A source declares, statically, its hyperparameters (a pydantic model), the
fields of one batch with their :class:`~dsl.language.shapes.TensorType`, and its
``kind``. The checker binds model inputs to those fields before any tensor
exists; the trainer calls ``load`` (which imports torch lazily) to get a
:class:`~dsl.data.base.Dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from dsl.language.shapes import TensorType

Kind = Literal["table", "graph", "graphs", "bags", "episodes", "images"]


class SourceParams(BaseModel):
    """Base of a source's hyperparameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    @model_validator(mode="after")
    def _rows_left_to_train_on(self) -> SourceParams:
        val, test = getattr(self, "val", 0) or 0, getattr(self, "test", 0) or 0
        if val + test >= 1:
            raise ValueError(f"val={val:g} and test={test:g} hold out {val + test:g} of the rows, leaving none "
                             "to train on (val + test must be below 1)")
        return self


FieldsFn = Callable[[Any], dict[str, TensorType]]
SizesFn = Callable[[Any], dict[str, int]]
LoadFn = Callable[[Any, int], Any]  # (params, seed) -> Dataset


@dataclass(frozen=True)
class Source:
    """A registered data source such as ``digits(batch=64)``."""

    name: str
    kind: Kind
    params: type[SourceParams]
    fields: FieldsFn
    load: LoadFn
    doc: str = ""
    positional: tuple[str, ...] = ()  # params that may be given positionally
    sizes: SizesFn | None = None  # sizes it declares besides its fields (N_color), model constants
    ranges: SizesFn | None = None  # integer fields whose values lie below a known bound ({"y": 10})

    def field_types(self, params: Any) -> dict[str, TensorType]:
        return self.fields(params)


_SOURCES: dict[str, Source] = {}


def register_source(src: Source) -> Source:
    _SOURCES[src.name] = src
    return src


def _ensure_loaded(name: str | None = None) -> None:
    """Import the declaration modules that register ``name`` (every built-in source when None).

    ``table``, ``images`` and ``pyg`` live in modules of their own, imported when a spec names
    them: a check of a spec on ``digits`` does not pay for the table, image and PyG readers."""
    from dsl.data import sources  # noqa: F401

    if name in (None, "table"):
        from dsl.data import tables  # noqa: F401
    if name in (None, "images"):
        from dsl.data import images  # noqa: F401
    if name in (None, "pyg"):
        from dsl.data import pyg  # noqa: F401


def lookup_source(name: str) -> Source | None:
    _ensure_loaded(name)
    return _SOURCES.get(name)


def source_names() -> list[str]:
    _ensure_loaded()
    return sorted(_SOURCES)
