"""Block values: a block used as a value (``expert=MLP(hidden=64)``, ``enc = Encoder(...)``).

A :class:`DeclValue` is a registered block with validated hyperparameters; a
:class:`UserBlockValue` a user ``block`` with its arguments, checked again for
the input types of each use. Both infer their output types for a caller's shape
rule and count their parameters; the compiler builds them
(:func:`dsl.building.compiler.instantiate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dsl.checking.budget import estimate
from dsl.checking.program import Program, Ref
from dsl.checking.scope import Poison, TensorVal
from dsl.language import ir
from dsl.language.constants import Const
from dsl.language.diagnostics import Span
from dsl.language.registry import BlockValue, BuildCall, Decl, Params
from dsl.language.shapes import DimEnv, ShapeCall, ShapeError, TensorType

if TYPE_CHECKING:
    from dsl.checking.checker import Checker


class DeclValue(BlockValue):
    """A registered block used as a value, e.g. ``expert=MLP(hidden=64, out=32)``."""

    def __init__(self, decl: Decl, params: Params):
        self.decl = decl
        self.params = params
        self.name = decl.name

    def named(self, inputs: Sequence[TensorType]) -> dict[str, TensorType]:
        """The input types by the block's input names (positional, in declaration order)."""
        names = [a.name for a in self.decl.inputs]
        if len(inputs) > len(names) and not (self.decl.inputs and self.decl.inputs[-1].variadic):
            raise ValueError(f"{self.decl.name} takes {len(names)} tensor inputs, got {len(inputs)}")
        return dict(zip(names, inputs, strict=False))

    def infer(self, call: ShapeCall, inputs: Sequence[TensorType]) -> list[TensorType]:
        sub = ShapeCall(self.decl.name, self.named(inputs), call.env)
        return self.decl.infer(sub, self.params)

    def build_call(self, inputs: Sequence[TensorType], instantiate: Any = None) -> BuildCall:
        """What the block's builder (or parameter count) sees for one copy on ``inputs``."""
        named = self.named(inputs)
        outs = self.decl.infer(ShapeCall(self.decl.name, named, DimEnv()), self.params)
        if instantiate is None:
            return BuildCall(self.decl.name, named, outs)
        return BuildCall(self.decl.name, named, outs, instantiate)

    def count_params(self, inputs: Sequence[TensorType]) -> int | None:
        if self.decl.count_params is None:
            return None
        return self.decl.count_params(self.build_call(inputs), self.params)

    def aux_outputs(self, inputs: Sequence[TensorType]) -> list[tuple[int, float]]:
        return [(self.decl.outputs.index(a.output),
                 float(getattr(self.params, a.weight) if isinstance(a.weight, str) else a.weight))
                for a in self.decl.aux]

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump(exclude_defaults=True).items())
        return f"{self.decl.name}({args})"


class UserBlockValue(BlockValue):
    """A user ``block`` used as a value (``expert=Expert(dim=16)``)."""

    def __init__(self, checker: Checker, bdef: ir.BlockDef, consts: dict[str, Const], span: Span):
        self.checker = checker
        self.bdef = bdef
        self.consts = consts
        self.span = span
        self.name = bdef.name

    def _program(self, inputs: Sequence[TensorType], env: DimEnv | None = None) -> Program:
        args: list[TensorVal | Poison] = [TensorVal(Ref(f"arg{i}"), t, self.span, None) for i, t in enumerate(inputs)]
        if len(args) != len(self.bdef.inputs):
            raise ShapeError(f"`{self.name}` takes {len(self.bdef.inputs)} tensor inputs, given {len(args)}")
        saved_env = self.checker.env
        if env is not None:
            self.checker.env = env
        before = len(self.checker.diags)
        try:
            sub = self.checker.instantiate(self.bdef, self.consts, args, self.span)
        finally:
            self.checker.env = saved_env
        if sub is None:
            problems = self.checker.diags[before:]
            del self.checker.diags[before:]
            detail = problems[0].message if problems else "it does not check"
            label = problems[0].label if problems else ""
            raise ShapeError(f"block value `{self.name}` does not accept {', '.join(str(t) for t in inputs)}: {detail}", label=label)
        return sub

    def infer(self, call: ShapeCall, inputs: Sequence[TensorType]) -> list[TensorType]:
        sub = self._program(inputs, call.env)
        return [sub.type_of(r) for r in sub.outputs.values()]

    def program(self, inputs: Sequence[TensorType]) -> Program:
        """The block checked on concrete input types, in an environment of its own (to build it).

        Its auxiliary losses are extra outputs after its own, as for a user block called
        in a model body, so that whoever calls a copy (an MoE) can add them."""
        sub = self._program(inputs, DimEnv())
        for a in sub.aux:
            sub.outputs[a.key] = a.ref
        return sub

    def aux_outputs(self, inputs: Sequence[TensorType]) -> list[tuple[int, float]]:
        sub = self.program(inputs)
        keys = list(sub.outputs)
        return [(keys.index(a.key), a.weight) for a in sub.aux]

    def count_params(self, inputs: Sequence[TensorType]) -> int | None:
        est = estimate(self.program(inputs))
        return est.params if est.exact else None

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.consts.items())
        return f"{self.name}({args})"


