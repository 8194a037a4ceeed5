"""What names mean while checking: the values an expression can have, and scopes.

A name in a model or block body stands for a tensor (:class:`TensorVal`, an
output of a program node), a constant, a named block instance whose weights
every call shares, or a block value; :data:`POISON` marks a value whose check
failed (already reported), so one mistake is reported once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dsl.checking.program import Ref
from dsl.language.constants import Const
from dsl.language.diagnostics import Span
from dsl.language.registry import BlockValue
from dsl.language.shapes import Sym, TensorType


class Poison:
    """The value of an expression whose check failed (already reported)."""


POISON = Poison()


@dataclass
class TensorVal:
    ref: Ref
    type: TensorType
    span: Span
    var: str | None = None
    use_span: Span | None = None  # where it is passed, when bound to a block's input


@dataclass
class ConstVal:
    value: Const
    span: Span


@dataclass
class InstanceVal:
    """A named block value: one module whose weights every call shares."""

    value: BlockValue
    module: str
    span: Span
    var: str
    first_inputs: list[TensorType] | None = None


@dataclass
class BlockValueVal:
    value: BlockValue
    span: Span


Value = TensorVal | ConstVal | InstanceVal | BlockValueVal | Poison


@dataclass
class Scope:
    consts: dict[str, Const]
    const_spans: dict[str, Span] = field(default_factory=dict)
    names: dict[str, Value] = field(default_factory=dict)
    symbols: dict[str, Sym] | None = None  # block-local renaming of symbolic dims
    block: str | None = None
    call_span: Span | None = None


