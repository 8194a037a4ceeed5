"""The block registry: one table of blocks (capitalised, have weights) and
functions (lower case, no weights). Pure Python.

A block file in ``blocks/`` declares a :class:`Decl` with its pydantic params,
its shape rule and its builder, and calls :func:`register`. The registry imports
every module of the ``dsl.blocks`` package on first use, then the plugins of the
entry-point group ``dsl.blocks``. Builders import torch lazily, so importing the
registry never imports torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from dsl.language.diagnostics import Diagnostic, Span
from dsl.language.errors import DslError
from dsl.language.shapes import ShapeCall, Sym, TensorType


class Params(BaseModel):
    """Base for block hyperparameters: unknown keys are errors, values validated."""

    # defer_build: the checker loads every block, but a spec validates the params of
    # only the few it uses; building each schema on first use keeps `dsl check` fast.
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, defer_build=True)


class NoParams(Params):
    pass


@dataclass(frozen=True)
class TensorArg:
    """A tensor input of a block: positional when required, keyword when optional."""

    name: str
    optional: bool = False
    doc: str = ""
    variadic: bool = False  # takes any number of positional tensors (cat, stack)
    default: str | None = None  # name of another input used when this one is absent
    # Values are indices: >= 0 and below dim 0 of the input of this name (edge_index of x), or below the
    # hyperparameter of this name (no upper bound while it is null). Checked at run time by dsl.building.guards.
    index_of: str | None = None


@dataclass(frozen=True)
class AuxLoss:
    """An output that training adds to the loss, times ``weight`` (a float, or the
    name of a hyperparameter holding the coefficient)."""

    output: str
    weight: float | str = 1.0


Size = int | Sym  # a hyperparameter that may be a size read from the inputs at run time (`T`)


class InstanceRef:
    """A named block instance given as a hyperparameter (``Linear(h, out=V, tie=emb)``):
    its value, the module that holds its weights, and the types it was first called on."""

    def __init__(self, name: str, module: str, value: BlockValue, inputs: Sequence[TensorType] = ()):
        self.name, self.module, self.value, self.inputs = name, module, value, tuple(inputs)

    def __repr__(self) -> str:
        return self.name


class BlockValue:
    """A block used as a value: ``expert=MLP(hidden=64, out=32)`` or ``enc = MLP(...)``.

    The checker creates it (:mod:`dsl.checking.values`). A block that takes one as a
    hyperparameter calls :meth:`infer` in its shape rule, :meth:`count_params` in its
    parameter count, and ``call.instantiate(value, inputs)`` in its builder (once per
    copy): building a value is the compiler's job, handed to builders through the
    :class:`BuildCall`.
    """

    name: str = ""

    def infer(self, call: ShapeCall, inputs: Sequence[TensorType]) -> list[TensorType]:
        raise NotImplementedError

    def count_params(self, inputs: Sequence[TensorType]) -> int | None:
        """Parameters of one built copy, from sizes alone (None: unknown); see dsl.checking.budget."""
        return None

    def aux_outputs(self, inputs: Sequence[TensorType]) -> list[tuple[int, float]]:
        """The outputs of a built copy that are auxiliary losses, as (output index, weight)."""
        return []

    def build(self, inputs: Sequence[TensorType]) -> Any:  # -> torch.nn.Module
        """A new module for tensors of ``inputs``' types. Registered blocks and user blocks
        are built by the compiler; a value of another kind (a plugin's) builds itself here."""
        raise NotImplementedError(f"`{self.describe()}` cannot build itself")

    def describe(self) -> str:
        return self.name


class BuildError(DslError):
    """Raised by a builder when a concrete size is missing or a value is unusable."""

    def __init__(self, message: str, arg: str | None = None, help: str | None = None, code: str = "E0601"):
        super().__init__(message)
        self.message, self.arg, self.help, self.code = message, arg, help, code


Instantiate = Callable[[BlockValue, Sequence["TensorType"]], Any]


def _no_values(value: BlockValue, inputs: Sequence[TensorType]) -> Any:
    raise BuildError(f"`{value.describe()}` cannot be built here: no compiler was given to build block values")


class BuildCall:
    """What a builder sees: the concrete (as far as known) types of its inputs and outputs,
    and :meth:`instantiate` to build a block value it was given as a hyperparameter."""

    def __init__(self, block: str, inputs: dict[str, TensorType], outputs: Sequence[TensorType],
                 instantiate: Instantiate = _no_values):
        self.block = block
        self.inputs = inputs
        self.outputs = list(outputs)
        self._instantiate = instantiate

    def instantiate(self, value: BlockValue, inputs: Sequence[TensorType]) -> Any:
        """A new module for ``value`` called on tensors of ``inputs``' types (a new weight set)."""
        return self._instantiate(value, inputs)

    def has(self, name: str) -> bool:
        return name in self.inputs

    def type(self, name: str) -> TensorType:
        return self.inputs[name]

    def size(self, name: str, axis: int) -> int:
        """The concrete size of ``axis`` of input ``name``; a BuildError if unknown."""
        t = self.inputs[name]
        try:
            d = t.shape[axis]
        except IndexError:
            raise BuildError(f"`{self.block}` input `{name}` has no axis {axis}", arg=name) from None
        if isinstance(d, int):
            return d
        sym = "_" if d is None else str(d)
        hint = f"--dim {sym}=..." if d is not None and getattr(d, "name", None) else "a concrete size"
        raise BuildError(
            f"`{self.block}` needs the size of `{name}` axis {axis}, which is {sym}: unknown at build time",
            arg=name,
            help=f"give it with {hint} on the command line or dims={{'{sym}': ...}} in Python,"
            " or let the train section's data bind it",
        )


InferFn = Callable[[ShapeCall, Any], list[TensorType]]
BuildFn = Callable[[BuildCall, Any], Any]


@dataclass(frozen=True)
class Lowered:
    """How a function call becomes an fx ``call_function`` node."""

    target: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: tuple[Any, ...] = ()  # extra positional args after the tensors
    pack: bool = False  # pass the tensors as one list (torch.cat, torch.stack)
    device: bool = False  # pass device= the device of the model's first input (tensors made inside a model)
    keywords: tuple[str, ...] = ()  # tensor inputs passed by keyword (torch.index_select(x, dim=0, index=i))


LowerFn = Callable[[BuildCall, Any], Lowered]
# Parameters a block's module will hold, computed from the same BuildCall its
# builder gets, without torch (dsl.checking.budget refuses too large a model with it).
CountFn = Callable[[BuildCall, Any], int]

# What gradual pruning (``prune = magnitude(...)``) may mask in a block's module, by kind, so that
# `dsl check` can tell a layer with nothing to prune: weight matrices (linear maps, conv kernels,
# recurrent and attention projections), lookup tables, learned prototypes and pattern memories;
# the last two only when the spec asks (embeddings=true, prototypes=true).
WEIGHTS, EMBEDDINGS, PROTOTYPES = "weights", "embeddings", "prototypes"
Prunable = frozenset[str] | Callable[[Any], frozenset[str]]  # a set, or one from the block's params


@dataclass(frozen=True)
class Decl:
    """A registered block or function."""

    name: str
    kind: Literal["block", "function"]
    params: type[Params]
    inputs: tuple[TensorArg, ...]
    outputs: tuple[str, ...]
    infer: InferFn
    build: BuildFn | None = None  # blocks: -> nn.Module, forward(*required, **optional)
    lower: LowerFn | None = None  # functions: -> Lowered
    count_params: CountFn | None = None  # blocks: parameter count, pure Python (None: not declared)
    prunable: Prunable | None = None  # blocks: what pruning may mask (None: not declared, checked at train time)
    aux: tuple[AuxLoss, ...] = ()
    # The order of positional arguments when it differs from the required tensor inputs':
    # tensor input names and hyperparameter names, as torch orders them
    # (``reshape(x, [B, T, 4, 16])``: ("x", "shape"); ``Parameter([T, D])``: ("shape",)).
    positional: tuple[str, ...] | None = None
    differentiable: bool = True  # whether its outputs carry gradients back to its float inputs
    reads_model: bool = False  # a function whose lowered callable takes the whole model first (train section only)
    doc: str = ""
    paper: str = ""
    signature: str = ""  # e.g. "[..., F] -> [..., out]"
    source: str = "builtin"

    @property
    def positional_names(self) -> tuple[str, ...]:
        """The names positional arguments bind to, in order."""
        if self.positional is not None:
            return self.positional
        return tuple(a.name for a in self.inputs)

    @property
    def required_inputs(self) -> list[TensorArg]:
        return [a for a in self.inputs if not a.optional]

    @property
    def optional_inputs(self) -> list[TensorArg]:
        return [a for a in self.inputs if a.optional]

    def prunable_kinds(self, params: Any) -> frozenset[str] | None:
        """The kinds of weights pruning may mask in this block built with ``params`` (None: not declared)."""
        return self.prunable(params) if callable(self.prunable) else self.prunable

    def input(self, name: str) -> TensorArg | None:
        for a in self.inputs:
            if a.name == name:
                return a
        return None


_REGISTRY: dict[str, Decl] = {}
_LOADED = False
PLUGIN_PROBLEMS: list[Diagnostic] = []


def register(decl: Decl) -> Decl:
    if decl.kind == "block" and decl.build is None:
        raise ValueError(f"block {decl.name} has no builder")
    if decl.kind == "function" and decl.lower is None:
        raise ValueError(f"function {decl.name} has no lowering")
    _REGISTRY[decl.name] = decl
    return decl


BUILTIN_PACKAGE = "dsl.blocks"  # the block library, one family per module


def _load_builtin() -> None:
    # Imported by name: the block library imports the registry to register itself,
    # and the registry never depends on any one block (the plugin pattern).
    pkg = importlib.import_module(BUILTIN_PACKAGE)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name == "nn":
            continue
        importlib.import_module(f"{BUILTIN_PACKAGE}.{info.name}")


def _load_plugins() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="dsl.blocks"):
        _load_plugin(ep)


class PluginError(DslError):
    """A plugin that loaded but declares something the registry cannot accept."""


def _load_plugin(ep: Any) -> None:
    """Load one entry point of the group ``dsl.blocks``; on any problem, undo what it
    registered and record an E0901 warning naming it (the rest of the registry stays usable).

    The entry point names either a module whose import calls :func:`register` (the
    convention of ``blocks/*.py``), or ``module:attr`` where ``attr`` is a :class:`Decl`, a
    list of them, or a callable returning one or a list."""
    before = dict(_REGISTRY)
    try:
        obj = ep.load()
        if callable(obj) and not isinstance(obj, (Decl, type)):
            obj = obj()
        given = list(obj) if isinstance(obj, (list, tuple)) else [obj] if isinstance(obj, Decl) else []
        for decl in given:
            if not isinstance(decl, Decl):
                raise PluginError(f"`{ep.value}` gives a {type(decl).__name__}, not a dsl.language.registry.Decl")
            register(decl)
        added = {k: v for k, v in _REGISTRY.items() if before.get(k) is not v}
        if not added:
            raise PluginError(f"`{ep.value}` registers no block or function")
        for name, decl in added.items():
            _validate_plugin_decl(name, decl, before)
    except Exception as exc:  # a broken plugin must not break the rest
        _REGISTRY.clear()
        _REGISTRY.update(before)
        detail = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
        PLUGIN_PROBLEMS.append(
            Diagnostic(
                "E0901",
                f"plugin `{ep.name}` ({ep.value}) failed to load: {detail}",
                Span(file=f"<plugin {ep.name}>"),
                help="its blocks are unavailable; fix or uninstall the package that provides it",
                severity="warning",
            )
        )
        return
    for name, decl in added.items():
        _REGISTRY[name] = _as_plugin(decl, ep.name)


def _validate_plugin_decl(name: str, decl: Decl, before: dict[str, Decl]) -> None:
    """The rules a built-in block follows by construction, checked for third-party ones."""
    import keyword

    if not isinstance(decl, Decl) or decl.name != name:
        raise PluginError(f"registered `{name}` with a mismatched declaration")
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise PluginError(f"`{name}` is not a valid block name (a Python identifier, not starting with `_`)")
    if name in before:
        owner = before[name].source
        raise PluginError(f"`{name}` is already defined ({owner}); a plugin cannot replace it")
    if decl.kind == "block" and not name[0].isupper():
        raise PluginError(f"block `{name}` must start with an upper-case letter (blocks have weights)")
    if decl.kind == "function" and not name[0].islower():
        raise PluginError(f"function `{name}` must start with a lower-case letter")
    if not (isinstance(decl.params, type) and issubclass(decl.params, Params)):
        raise PluginError(f"`{name}`: params must be a subclass of dsl.language.registry.Params")
    if not callable(decl.infer):
        raise PluginError(f"`{name}`: infer (the shape rule) must be callable")
    if not all(isinstance(a, TensorArg) for a in decl.inputs) or not decl.outputs:
        raise PluginError(f"`{name}`: inputs must be TensorArgs and there must be at least one output")
    for out in decl.outputs:
        if not (isinstance(out, str) and out.isidentifier() and not keyword.iskeyword(out)):
            raise PluginError(f"`{name}`: output name {out!r} is not an identifier")


def _as_plugin(decl: Decl, source: str) -> Decl:
    from dataclasses import replace

    return decl if decl.source != "builtin" else replace(decl, source=source)


def plugin_diagnostics() -> list[Diagnostic]:
    """Warnings (E0901) for the plugins that failed to load; loads the registry first."""
    load()
    return list(PLUGIN_PROBLEMS)


def load() -> dict[str, Decl]:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        _load_builtin()
        _load_plugins()
    return _REGISTRY


def lookup(name: str) -> Decl | None:
    return load().get(name)


def names() -> list[str]:
    return sorted(load())
