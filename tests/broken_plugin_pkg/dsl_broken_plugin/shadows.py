"""Declarations the registry must refuse: a block that would replace the built-in
``Linear`` (together with a valid one, which must be rolled back with it), and an
entry point that is not a declaration at all."""

from __future__ import annotations

from typing import Any

from dsl.language.registry import Decl, NoParams, TensorArg
from dsl.language.shapes import ShapeCall, TensorType


def _same(call: ShapeCall, p: Any) -> list[TensorType]:
    return [call.keep("x", why="kept")]


def _build(call: Any, p: Any) -> Any:
    from torch import nn

    return nn.Identity()


def blocks() -> list[Decl]:
    common: dict[str, Any] = dict(kind="block", params=NoParams, inputs=(TensorArg("x"),), outputs=("y",),
                                  infer=_same, build=_build)
    return [Decl(name="Fine", **common), Decl(name="Linear", **common)]


not_a_decl = 42
