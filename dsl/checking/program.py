"""The checked program: a typed dataflow graph, the hand-off from check to build.

Pure Python. Each :class:`PNode` is one operation with its input references,
validated hyperparameters and symbolic output types; each :class:`ModuleSpec`
says how to build one submodule (a registered block, a shared block value, or
a user ``block`` compiled to its own graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dsl.language.diagnostics import Span
from dsl.language.registry import BlockValue, Decl, Params
from dsl.language.shapes import DimEnv, TensorType


@dataclass(frozen=True)
class Ref:
    """Output ``index`` of node ``node``."""

    node: str
    index: int = 0


Arg = Ref | list[Ref] | int | float | bool


@dataclass
class ModuleSpec:
    kind: Literal["decl", "value", "user"]
    span: Span
    decl: Decl | None = None
    params: Params | None = None
    value: BlockValue | None = None
    in_types: dict[str, TensorType] = field(default_factory=dict)
    out_types: list[TensorType] = field(default_factory=list)
    program: Program | None = None
    tie: str | None = None  # the module whose weight this one shares (Linear(..., tie=emb))


@dataclass
class PNode:
    """One operation. ``index`` nodes keep their subscript in ``key``: a tuple of
    ints, sizes (:class:`~dsl.language.shapes.Sym`), ``slice`` objects of those and
    ``Ellipsis``, as ``operator.getitem`` takes it."""

    name: str
    kind: Literal["input", "block", "function", "binop", "unary", "user", "index"]
    op: str
    span: Span
    args: list[Arg] = field(default_factory=list)
    kwargs: dict[str, Ref] = field(default_factory=dict)
    decl: Decl | None = None
    params: Params | None = None
    types: list[TensorType] = field(default_factory=list)
    module: str | None = None  # attribute name of the submodule called
    var: str | None = None  # the name as written in the spec
    key: tuple[Any, ...] = ()  # index nodes: the subscript


@dataclass(frozen=True)
class SizeSource:
    """Where a symbolic dim's size is read at run time: axis ``axis`` of input node ``node``."""

    symbol: str
    node: str
    axis: int


@dataclass(frozen=True)
class SizeBound:
    """A size the spec relies on staying within ``upper`` (``pos[:T]`` on 128 rows: T <= 128),
    checked by the runtime guard once the inputs bind its symbols."""

    size: Any  # a Sym
    upper: int
    what: str  # "`pos[:T]` (line 14) reads at most the 128 rows of `pos`"
    span: Span = field(default_factory=Span)  # the slice, for a data that settles it at check time


@dataclass
class AuxEntry:
    key: str  # "aux:<node>.<output>"
    ref: Ref
    weight: float


@dataclass
class Program:
    name: str
    env: DimEnv
    nodes: list[PNode] = field(default_factory=list)
    inputs: dict[str, Ref] = field(default_factory=dict)
    outputs: dict[str, Ref] = field(default_factory=dict)
    modules: dict[str, ModuleSpec] = field(default_factory=dict)
    aux: list[AuxEntry] = field(default_factory=list)
    span: Span = field(default_factory=Span)
    sizes: list[SizeSource] = field(default_factory=list)  # where each input symbol's size is read
    bounds: list[SizeBound] = field(default_factory=list)
    _names: set[str] = field(default_factory=set)
    _index: dict[str, PNode] = field(default_factory=dict)
    _next_suffix: dict[str, int] = field(default_factory=dict)

    def node(self, name: str) -> PNode:
        return self._index[name]

    def unique(self, base: str) -> str:
        base = sanitize(base)
        # Names are never released, so every suffix below the last one handed out for
        # `base` is still taken: resume there (a rebound `h` stays O(1), not O(uses)).
        name, i = base, self._next_suffix.get(base, 1)
        if name in self._names:
            name = f"{base}_{i}"
            while name in self._names:
                i += 1
                name = f"{base}_{i}"
            self._next_suffix[base] = i + 1
        self._names.add(name)
        return name

    def add(self, node: PNode) -> PNode:
        self.nodes.append(node)
        self._index[node.name] = node
        return node

    def type_of(self, ref: Ref) -> TensorType:
        return self.env.resolve_type(self._index[ref.node].types[ref.index])

    def input_types(self) -> dict[str, TensorType]:
        idx = self._index
        return {k: self.env.resolve_type(idx[r.node].types[r.index]) for k, r in self.inputs.items()}

    def output_types(self) -> dict[str, TensorType]:
        idx = self._index
        return {k: self.env.resolve_type(idx[r.node].types[r.index]) for k, r in self.outputs.items()}


# Names that would shadow nn.Module / GraphModule attributes or Python syntax. The attributes are every
# public one of torch.fx.GraphModule, class and instance (tests/test_hostile_specs.py compares them with
# the installed torch: this layer cannot import it); names starting with `dsl_` are the compiler's own.
MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "add_submodule", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "code", "compile", "cpu", "cuda", "delete_all_unused_submodules", "delete_submodule", "double",
    "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter",
    "get_submodule", "graph", "half", "ipu", "load_state_dict", "meta", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "print_readable", "recompile",
    "register_backward_hook", "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule", "shape_env",
    "share_memory", "state_dict", "to", "to_empty", "to_folder", "train", "training", "type", "xpu", "zero_grad",
})
_RESERVED = MODULE_ATTRIBUTES | {
    "self", "torch", "operator", "inf", "nan", "getattr", "device",
}


def sanitize(name: str) -> str:
    import keyword

    clean = "".join(c if (c.isascii() and (c.isalnum() or c == "_")) else "_" for c in name) or "v"
    if clean[0].isdigit():
        clean = "v_" + clean
    if keyword.iskeyword(clean) or clean in _RESERVED or clean.startswith(("_", "dsl_")):
        clean = "v_" + clean.lstrip("_")
    return clean


def arg_refs(args: list[Arg]) -> list[Ref]:
    out: list[Ref] = []
    for a in args:
        if isinstance(a, Ref):
            out.append(a)
        elif isinstance(a, list):
            out.extend(x for x in a if isinstance(x, Ref))
    return out


def describe_params(params: Any) -> str:
    if params is None:
        return ""
    try:
        items = params.model_dump(exclude_defaults=True)
    except Exception:
        return ""
    parts = []
    for k, v in items.items():
        if isinstance(v, BlockValue):
            parts.append(f"{k}={v.describe()}")
        elif isinstance(v, dict):
            continue
        else:
            parts.append(f"{k}={v!r}".replace("True", "true").replace("False", "false").replace("None", "null"))
    return ", ".join(parts)
