"""Runtime input guards: a compiled model checks its inputs against its spec.

The checker proves a spec consistent for *some* sizes; a call can still pass
tensors that contradict it (a wrong rank, ``64`` where the spec says ``32``,
``N`` rows in ``x`` but a different ``N`` in ``batch``, a float edge list, an
edge index past the last node). Without a guard that surfaces as a matmul or
scatter error three frames inside torch; with one it is an :class:`InputError`
naming the input, the dim, and the expected and actual values.

One mechanism: the compiler writes ``check_inputs(self.dsl_guard, <a weight>,
x, ...)`` as the first statement of the generated ``forward``
(:func:`check_inputs`); the rules are the model's attribute ``dsl_guard``. The
guard is part of the model: it survives ``copy.deepcopy`` and pickling (whose
rebuild traces the code with :class:`Tracer`, which keeps the call) and needs
no hook. While ``torch.compile`` or ``torch.export`` trace, it returns at once,
so the compiled or exported graph holds no guard code (a compiled model is
unguarded). ``dsl.compile(..., guards=False)`` (``--no-guards``) leaves it out.

What is checked:

* dtype: ``long`` is int64, ``int`` int32, ``bool`` bool; ``float`` is the
  dtype of the model's floating parameters (float32 unless converted); the
  device is the parameters' device;
* rank (at least the declared rank after ``...``), fixed dims, and symbolic
  dims consistent across inputs (the first input that shows ``N`` binds it;
  compound dims such as ``T*D`` are checked once their symbols are bound);
* index inputs: a block input declared with ``TensorArg(index_of=...)``
  (``GAT``'s ``edge_index`` indexes the rows of ``x``; a pool's ``batch`` is
  below ``graphs``) must hold values in ``[0, bound)``: one ``aminmax`` per
  index input and call (on a GPU, one synchronisation).

The dtype, rank and dim checks depend only on the inputs' signature (shape,
dtype, device, and the weight's dtype and device): the last
``MAX_SIGNATURES`` signatures that passed are remembered, so a training loop
that feeds the same shapes pays for them once.

Which dims are fixed: the spec's integers, the dims a caller gives
(``dims=``, ``--dim``) and the feature (last) axis of float inputs, which the
weights are sized by. Sizes that only the train section's data binds
(karate's N=34, E=156) stay free, so a model compiled for one graph runs on
another.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from dsl.checking.input_rules import IndexRule, InputRule, index_rules, input_rules
from dsl.checking.program import Program
from dsl.language.errors import InputError
from dsl.language.shapes import Dim, Sym

_DTYPES = {"long": "int64", "int": "int32", "bool": "bool"}


# --------------------------------------------------------------------------- checking


class InputGuard:
    """The checks of one compiled model: plain, picklable data and :meth:`check`."""

    MAX_SIGNATURES = 64  # bounded: a loop over ragged batches must not grow memory

    def __init__(self, inputs: tuple[InputRule, ...], indices: tuple[IndexRule, ...],
                 bounds: tuple[tuple[Dim, int, str], ...] = ()):
        self.inputs = inputs
        self.indices = indices
        self.bounds = bounds  # (size, upper, what): sizes a slice relies on (pos[:T] on 128 rows)
        self.names = tuple(r.name for r in inputs)
        # Inputs with dims like T*D, checked after every plain symbol is bound (usually none).
        self.compound = tuple(r for r in inputs if any(isinstance(d.want, Sym) and d.want.name is None
                                                       for d in r.dims))
        self.passed: dict[tuple[Any, ...], tuple[dict[str, int], tuple[tuple[int, int | None], ...]]] = {}

    @classmethod
    def of(cls, prog: Program) -> InputGuard:
        bounds = tuple((prog.env.resolve(b.size), b.upper, b.what) for b in prog.bounds)
        return cls(input_rules(prog), index_rules(prog), bounds)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "passed": {}}  # a cache, not data: a copy starts empty

    def __repr__(self) -> str:
        return f"InputGuard({', '.join(f'{r.name}: {r.declared}' for r in self.inputs)})"

    def check(self, weight: Any, inputs: tuple[Any, ...]) -> None:
        """Raise :class:`InputError` unless ``inputs`` (in ``forward``'s order) fit the spec.

        ``weight``: a floating parameter of the model (its dtype and device are the
        inputs'), or None for a model without one."""
        try:  # what the dtype/rank/dim checks depend on
            key: Any = (*((weight.dtype, weight.device) if weight is not None else ()),
                        *[(t.__class__, t.shape, t.dtype, t.device) for t in inputs])
        except (AttributeError, RuntimeError):  # a non-tensor, or a nested tensor (no sizes)
            key = None
        known = self.passed.get(key) if key is not None else None
        if known is None:
            bound = self.check_shapes(weight, inputs)
            known = (bound, self._index_plan(inputs, bound))
            if key is not None:
                if len(self.passed) >= self.MAX_SIGNATURES:
                    self.passed.pop(next(iter(self.passed)))  # the oldest
                self.passed[key] = known
        bound, plan = known
        for position, upper in plan:  # index values change from call to call: read every time
            lo, hi = _extremes(inputs[position])
            if lo < 0 or (upper is not None and hi >= upper):
                self.check_indices(inputs, bound)  # the rule-by-rule check names the block and bound

    def check_shapes(self, weight: Any, inputs: tuple[Any, ...]) -> dict[str, int]:
        """Types, dtypes, devices, ranks and dims; return the symbols the inputs bind."""
        bound: dict[str, int] = {}
        seen: dict[str, tuple[str, int]] = {}
        for rule, value in zip(self.inputs, inputs, strict=True):
            if not isinstance(value, torch.Tensor):
                raise InputError(f"input `{rule.name}` should be a tensor {rule.declared}, got {type(value).__name__}",
                                 input=rule.name, expected="tensor", actual=type(value).__name__)
            if value.is_nested:  # no sizes to check
                raise InputError(f"input `{rule.name}` should be a tensor {rule.declared}, got a nested tensor; "
                                 "pad it (torch.nested.to_padded_tensor) or pass its parts one call each",
                                 input=rule.name, expected="tensor", actual="nested tensor")
            _check_dtype(rule, value, weight)
            _check_shape(rule, value, bound, seen)
        for rule in self.compound:
            _check_compound(rule, inputs[self.names.index(rule.name)], bound)
        for size, upper, what in self.bounds:
            value = size.substitute(bound) if isinstance(size, Sym) else size  # type: ignore[arg-type]
            if isinstance(value, int) and value > upper:
                given = f"{size} = {value}" if isinstance(size, Sym) else str(value)
                raise InputError(f"{what}, but the inputs give {given}", expected=upper, actual=value)
        return bound

    def check_indices(self, inputs: tuple[Any, ...], bound: dict[str, int]) -> None:
        """Index inputs hold values in ``[0, bound)``: one ``aminmax`` per input, however many blocks use it."""
        given = dict(zip(self.names, inputs, strict=True))
        extremes: dict[str, tuple[int, int]] = {}
        for rule in self.indices:
            _check_index(rule, given, bound, extremes)

    def _index_plan(self, inputs: tuple[Any, ...], bound: dict[str, int]) -> tuple[tuple[int, int | None], ...]:
        """Per index input with values to read, its position and the tightest bound of its rules."""
        given = dict(zip(self.names, inputs, strict=True))
        plan: dict[int, int | None] = {}
        for rule in self.indices:
            if not _readable_indices(given[rule.input]):
                continue
            position, upper = self.names.index(rule.input), _upper(rule, given, bound)
            if position not in plan:
                plan[position] = upper
            elif upper is not None:
                old = plan[position]
                plan[position] = upper if old is None else min(old, upper)
        return tuple(plan.items())


def check_inputs(guard: InputGuard, weight: Any, *inputs: Any) -> None:
    """The first statement of a guarded model's ``forward``: ``guard.check``, except while
    ``torch.compile`` or ``torch.export`` trace (the traced graph stays guard-free)."""
    if not torch.compiler.is_compiling():
        guard.check(weight, inputs)


GUARD_ATTRIBUTE = "dsl_guard"  # the guarded model's attribute that holds its InputGuard


class Tracer(fx.Tracer):
    """fx's tracer with :func:`check_inputs` kept as a call. Unpickling a GraphModule
    rebuilds it by tracing its code with the tracer its graph names; without this one,
    the guard would run on the tracer's proxies instead of being recorded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["autowrap_functions"] = (*kwargs.get("autowrap_functions", ()), check_inputs)
        super().__init__(*args, **kwargs)

    def create_arg(self, a: Any) -> Any:
        if isinstance(a, InputGuard):  # the model's own guard: read it from the model
            return self.create_node("get_attr", GUARD_ATTRIBUTE, (), {})
        return super().create_arg(a)


def _torch_dtype(name: str) -> Any:
    return getattr(torch, _DTYPES[name])


def _check_dtype(rule: InputRule, t: Any, weight: Any) -> None:
    if rule.dtype == "float":
        ok = t.dtype == weight.dtype if weight is not None else t.is_floating_point()
    else:
        ok = t.dtype == _torch_dtype(rule.dtype)
    if not ok:
        if rule.dtype == "float":
            want = weight.dtype if weight is not None else None
            expected = str(want).replace("torch.", "") if want is not None else "a floating dtype"
            why = " (the dtype of the model's parameters)" if want is not None else ""
        else:
            expected, why = _DTYPES[rule.dtype], f" (declared `{rule.dtype}`)"
        actual = str(t.dtype).replace("torch.", "")
        hint = ""
        if rule.dtype == "float" and not t.is_floating_point():  # pixels 0..255 in an integer array, say
            hint = f"; convert it (`{rule.name}.float()`, scaled as in training: images as floats in [0, 1])"
        raise InputError(f"input `{rule.name}` should be {expected}{why}, got {actual}{hint}",
                         input=rule.name, expected=expected, actual=actual)
    if weight is not None and t.dim() > 0 and t.device != weight.device:
        raise InputError(f"input `{rule.name}` is on {t.device}, the model on {weight.device}; move it with .to()",
                         input=rule.name, expected=str(weight.device), actual=str(t.device))


def _check_shape(rule: InputRule, t: Any, bound: dict[str, int], seen: dict[str, tuple[str, int]]) -> None:
    shape = tuple(t.shape)
    ndim = len(shape)
    if (ndim < rule.rank) if rule.variadic else (ndim != rule.rank):
        least = "at least " if rule.variadic else ""
        raise InputError(f"input `{rule.name}` should have {least}{rule.rank} dim{'s' if rule.rank != 1 else ''} "
                         f"{rule.declared}, got {ndim} (shape {list(shape)})",
                         input=rule.name, expected=rule.rank, actual=ndim)
    for d in rule.dims:
        axis = d.axis + ndim if d.axis < 0 else d.axis
        size = shape[axis]
        if isinstance(d.want, int):
            if size != d.want:
                named = f" ({d.label})" if d.label != str(d.want) else ""
                raise InputError(f"input `{rule.name}` dim {axis}{named} should be {d.want}, got {size} "
                                 f"(shape {list(shape)}; declared {rule.declared})",
                                 input=rule.name, dim=axis, expected=d.want, actual=size)
        elif isinstance(d.want, Sym) and d.want.name is not None:
            sym = d.want.name
            if sym not in bound:
                bound[sym], seen[sym] = size, (rule.name, axis)
            elif bound[sym] != size:
                first, first_axis = seen[sym]
                raise InputError(f"input `{rule.name}` dim {axis} is {d.label} = {size}, but `{first}` dim "
                                 f"{first_axis} gives {d.label} = {bound[sym]} (shape {list(shape)}; "
                                 f"declared {rule.declared})",
                                 input=rule.name, dim=axis, expected=bound[sym], actual=size)


def _check_compound(rule: InputRule, t: Any, bound: dict[str, int]) -> None:
    """Dims like ``T*D`` or ``N+1``: checked once every symbol in them is bound."""
    ndim = t.dim()
    for d in rule.dims:
        if not isinstance(d.want, Sym) or d.want.name is not None:
            continue
        want = d.want.substitute(bound)  # type: ignore[arg-type]
        if not isinstance(want, int):
            continue
        axis = d.axis + ndim if d.axis < 0 else d.axis
        size = int(t.shape[axis])
        if size != want:
            given = ", ".join(f"{s} = {bound[s]}" for s in sorted(d.want.symbols))
            raise InputError(f"input `{rule.name}` dim {axis} ({d.label}) should be {want} with {given}, got {size}",
                             input=rule.name, dim=axis, expected=want, actual=size)


def _readable_indices(t: Any) -> bool:
    """Whether ``t`` has index values to read (a wrong dtype was reported by the dtype check)."""
    return t.numel() > 0 and t.device.type != "meta" and not t.is_floating_point() and t.dtype != _torch_dtype("bool")


def _upper(rule: IndexRule, given: dict[str, Any], bound: dict[str, int]) -> int | None:
    """The exclusive upper bound of ``rule``'s indices for this call, None if unbounded."""
    if rule.rows_of is not None:
        rows = given[rule.rows_of]
        return int(rows.shape[0]) if rows.dim() > 0 else None
    if isinstance(rule.bound, int):
        return rule.bound
    if isinstance(rule.bound, Sym):
        value = rule.bound.substitute(bound)  # type: ignore[arg-type]
        return value if isinstance(value, int) else None
    return None


def _extremes(t: Any) -> tuple[int, int]:
    """The minimum and maximum of an index tensor: one ``aminmax`` (on a GPU, one synchronisation)."""
    lo, hi = torch.aminmax(t)
    return int(lo), int(hi)


def _check_index(rule: IndexRule, given: dict[str, Any], bound: dict[str, int],
                 extremes: dict[str, tuple[int, int]]) -> None:
    t = given[rule.input]
    if not _readable_indices(t):
        return
    upper = _upper(rule, given, bound)
    if rule.input not in extremes:  # one read per tensor, however many blocks use it
        extremes[rule.input] = _extremes(t)
    lo, hi = extremes[rule.input]
    if lo < 0 or (upper is not None and hi >= upper):
        limit = f"[0, {upper}) ({rule.what})" if upper is not None else "[0, ∞)"
        found = f"{lo} (its minimum)" if lo < 0 else f"{hi} (its maximum)"
        raise InputError(f"input `{rule.input}` of `{rule.block}` holds indices that must lie in {limit}, "
                         f"found {found}", input=rule.input, expected=(0, upper), actual=lo if lo < 0 else hi)


__all__ = ["InputError", "InputGuard", "Tracer", "check_inputs", "index_rules", "input_rules"]
