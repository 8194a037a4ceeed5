"""Runtime input guards: check a compiled module's inputs against its spec before ``forward``.

The checker proves a spec consistent for *some* sizes; a call can still pass
tensors that contradict it (a wrong rank, ``64`` where the spec says ``32``,
``N`` rows in ``x`` but a different ``N`` in ``batch``, a float edge list, an
edge index past the last node). Without a guard that surfaces as a matmul or
scatter error three frames inside torch; with one it is an :class:`InputError`
naming the input, the dim, and the expected and actual values.

The guard (:func:`install_guards`) is plain Python that runs in the module's
call before the fx graph (:func:`guarded_call`, not a forward pre-hook, which
would put every call on ``nn.Module``'s slow path), so the graph itself stays
what the compiler wrote: ``torch.compile(fullgraph=True)`` and ``torch.export``
see no guard code (the guard returns at once while they trace,
``torch.compiler.is_compiling()``). ``dsl.compile(..., guards=False)`` or
``--no-guards`` leaves it out.

What is checked, per call (all sizes are read from the tensors, no copies;
the checks that depend only on the inputs' shapes, dtypes and devices are
skipped when a call repeats one of the last signatures that passed, see
:meth:`InputGuard.validate`):

* every declared input is given, and nothing else;
* dtype: ``long`` is int64, ``int`` int32, ``bool`` bool; ``float`` is the
  dtype of the model's floating parameters (float32 unless converted); the
  device is the parameters' device;
* rank (at least the declared rank after ``...``), fixed dims, and symbolic
  dims consistent across inputs (the first input that shows ``N`` binds it,
  compound dims such as ``T*D`` are checked once their symbols are bound);
* index inputs: a block input declared with ``TensorArg(index_of=...)``
  (``GAT``'s ``edge_index`` indexes the rows of ``x``; a pool's ``batch`` is
  below ``graphs``) must hold values in ``[0, bound)``. This reads two numbers
  from the tensor (``aminmax``), so on a GPU it synchronises once per call.

Importing this module never imports torch (``dsl.InputError`` lives here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from dsl.language.shapes import Dim, Sym, TensorType

_DTYPES = {"long": "int64", "int": "int32", "bool": "bool"}


class InputError(ValueError):
    """A call whose inputs contradict the spec; ``input``/``dim``/``expected``/``actual`` say how."""

    def __init__(self, message: str, input: str | None = None, dim: int | None = None,
                 expected: Any = None, actual: Any = None):
        super().__init__(message)
        self.input, self.dim, self.expected, self.actual = input, dim, expected, actual


@dataclass(frozen=True)
class DimRule:
    """Axis ``axis`` (counted from the end when the input starts with ``...``) must equal ``want``."""

    axis: int
    want: Dim | None  # int, a Sym over other inputs' symbols, or None for `_`
    label: str  # the dim as the spec writes it, e.g. "F" or "hidden*heads"


@dataclass(frozen=True)
class InputRule:
    name: str
    dtype: str
    rank: int
    variadic: bool
    dims: tuple[DimRule, ...]
    declared: str  # "[B, 64]", for messages


@dataclass(frozen=True)
class IndexRule:
    """Model input ``input`` holds indices in ``[0, bound)`` for block ``block``."""

    input: str
    block: str
    rows_of: str | None = None  # the bound is dim 0 of this model input
    bound: Dim | None = None  # otherwise this dim (an int, or a Sym over input symbols), or no upper bound
    what: str = ""  # how the bound is described: "rows of `x`", "graphs"


# --------------------------------------------------------------------------- building the rules


def symbolic_program(spec: Any, dims: Any, overrides: Any) -> Any:
    """The spec checked with the caller's dims only, not the sizes its train data binds; None if moot.

    ``dsl.compile`` binds the dims the train section's data declares (karate:
    N=34, E=156) so that every weight can be sized. A guard must not pin those
    that no weight depends on: DESIGN §4 runs a model compiled for karate on
    another graph. This program keeps them symbolic; :func:`input_rules` pins
    only the feature (last) axis of float inputs, which the first layer's
    weights are sized by.
    """
    if getattr(spec, "train", None) is None:
        return None
    from dsl.checking.checker import check_resolved
    from dsl.language.resolve import resolve

    try:  # the train section unifies the inputs with the data's fields: leave it out
        bare = spec.model_copy(update={"train": None})
        prog, diags, _ = check_resolved(resolve(bare, dict(overrides or {})), dict(dims or {}))
    except Exception:  # without the data's sizes the spec may not check: then pin everything
        return None
    if prog is None or any(d.severity == "error" for d in diags):
        return None
    return prog


def input_rules(prog: Any, symbolic: Any = None) -> tuple[InputRule, ...]:
    """One rule per model input, in ``forward``'s argument order (see :func:`symbolic_program`)."""
    rules = []
    for name, ref in prog.inputs.items():
        raw: TensorType = prog.node(ref.node).types[ref.index]
        t = prog.type_of(ref)
        free = _free_shape(symbolic, name, t)
        n = len(t.shape)
        dims = []
        for i, (want, written) in enumerate(zip(t.shape, raw.shape)):
            pinned = t.dtype == "float" and i == n - 1  # a feature axis: the weights are sized by it
            if isinstance(want, int) and free is not None and isinstance(free[i], Sym) and not pinned:
                want = free[i]
            label = str(written) if isinstance(written, Sym) else str(want)
            dims.append(DimRule(i - n if t.variadic else i, want, label))
        rules.append(InputRule(name, t.dtype, n, t.variadic, tuple(dims), str(raw)))
    return tuple(rules)


def _free_shape(symbolic: Any, name: str, t: TensorType) -> tuple[Dim | None, ...] | None:
    if symbolic is None or name not in symbolic.inputs:
        return None
    free = symbolic.type_of(symbolic.inputs[name])
    return free.shape if len(free.shape) == len(t.shape) and free.variadic == t.variadic else None


def index_rules(prog: Any) -> tuple[IndexRule, ...]:
    """Index constraints of the blocks (user blocks included) that model inputs feed directly."""
    rules = _index_rules(prog, {r.node: name for name, r in prog.inputs.items() if r.index == 0})
    unique: dict[tuple[Any, ...], IndexRule] = {}
    for r in rules:  # two GAT layers on one edge list check it once
        unique.setdefault((r.input, r.rows_of, r.bound), r)
    return tuple(unique.values())


def _index_rules(prog: Any, input_of: dict[str, str]) -> list[IndexRule]:
    out: list[IndexRule] = []
    for node in prog.nodes:
        if node.kind == "user":
            out.extend(_user_rules(prog, node, input_of))
            continue
        decl, params = _decl_of(prog, node)
        if decl is None or (decl.inputs and decl.inputs[0].variadic):
            continue
        refs = _arg_refs(decl, node)
        for arg in decl.inputs:
            index_of = getattr(arg, "index_of", None)
            ref = refs.get(arg.name)
            if not index_of or ref is None or ref.index != 0 or ref.node not in input_of:
                continue
            out.append(_rule(prog, input_of[ref.node], decl.name, index_of, refs, params, input_of))
    return out


def _decl_of(prog: Any, node: Any) -> tuple[Any, Any]:
    if node.decl is not None:
        return node.decl, node.params
    spec = prog.modules.get(node.module) if node.module else None
    value = getattr(spec, "value", None)
    decl = getattr(value, "decl", None)  # a registered block used as a shared value
    return decl, getattr(value, "params", None)


def _arg_refs(decl: Any, node: Any) -> dict[str, Any]:
    if node.decl is None:  # block value: every input positional, in declaration order
        return dict(zip([a.name for a in decl.inputs], node.args))
    refs = dict(zip([a.name for a in decl.inputs if not a.optional], node.args))
    refs.update(node.kwargs)
    return refs


def _rule(prog: Any, input: str, block: str, index_of: str, refs: dict[str, Any], params: Any,
          input_of: dict[str, str]) -> IndexRule:
    bound_ref = refs.get(index_of)
    if bound_ref is not None:
        what = f"rows of `{index_of}`"
        if bound_ref.index == 0 and bound_ref.node in input_of:
            return IndexRule(input, block, rows_of=input_of[bound_ref.node], what=f"rows of `{input_of[bound_ref.node]}`")
        t = prog.type_of(bound_ref)
        first = t.shape[0] if t.shape and not t.variadic else None
        return IndexRule(input, block, bound=first, what=what)
    value = getattr(params, index_of, None)
    return IndexRule(input, block, bound=value if isinstance(value, int) else None, what=f"{index_of}={value}")


def _user_rules(prog: Any, node: Any, input_of: dict[str, str]) -> list[IndexRule]:
    """Rules inside a user block whose index input is fed by one of our model inputs."""
    sub = prog.modules[node.module].program
    if sub is None:
        return []
    outer = dict(zip(sub.inputs, node.args))  # inner input name -> outer ref
    inner_input_of = {r.node: name for name, r in sub.inputs.items() if r.index == 0}
    out = []
    for rule in _index_rules(sub, inner_input_of):
        ref = outer.get(rule.input)
        if ref is None or ref.index != 0 or ref.node not in input_of:
            continue
        rows_of, bound = None, rule.bound
        if rule.rows_of is not None:
            bref = outer.get(rule.rows_of)
            if bref is not None and bref.index == 0 and bref.node in input_of:
                rows_of = input_of[bref.node]
            elif bref is not None:
                t = prog.type_of(bref)
                bound = t.shape[0] if t.shape and not t.variadic else None
        what = f"rows of `{rows_of}`" if rows_of else rule.what
        out.append(IndexRule(input_of[ref.node], rule.block, rows_of=rows_of, bound=bound, what=what))
    return out


# --------------------------------------------------------------------------- checking


class Known(NamedTuple):
    """What a signature that passed found."""

    bound: dict[str, int]  # the symbols it bound
    index_plan: tuple[tuple[str, int | None], ...]  # see InputGuard._index_plan
    exact: Any  # a C++ check that a call repeats it exactly (InputGuard._exact_check), or None


class InputGuard:
    """The checks of one compiled model: picklable plain data, :meth:`validate` and :meth:`check`.

    :meth:`validate` is what every call runs. Whether a call passes the dtype,
    device, rank and dim checks depends only on its *signature*: the type,
    shape, dtype and device of each input and the dtype and device of the
    model's parameters. The last ``MAX_SIGNATURES`` signatures that passed are
    remembered (with the symbols they bound), so a training loop that feeds
    the same shapes pays for those checks once; a call that repeats the last
    one exactly is recognised by one C++ check (:meth:`_repeats_last`) before
    the signature is even built. Index values (``edge_index <
    N``) change from call to call: they are read on every call, one
    ``aminmax`` per index input.
    """

    MAX_SIGNATURES = 64  # bounded: a loop over ragged batches must not grow memory

    def __init__(self, inputs: tuple[InputRule, ...], indices: tuple[IndexRule, ...], probe: str | None):
        self.inputs = inputs
        self.indices = indices
        self.names = tuple(r.name for r in inputs)
        self.name_set = frozenset(self.names)
        # Inputs with dims like T*D, checked after every plain symbol is bound (usually none).
        self.compound = tuple(r for r in inputs if any(isinstance(d.want, Sym) and d.want.name is None
                                                       for d in r.dims))
        self.probe = probe  # a floating parameter whose dtype and device the inputs must share
        self.probe_path = tuple(probe.split(".")) if probe else ()
        # signature -> what its checks found
        self._passed: dict[tuple[Any, ...], Known] = {}
        self._last: Known | None = None  # the entry of the last call that passed

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_passed"] = {}  # a cache, not data: a copy starts empty
        state["_last"] = None  # and torch's C++ checks do not pickle
        return state

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The forward pre-hook interface (``register_forward_pre_hook(guard, with_kwargs=True)``)."""
        if _is_compiling():  # tracing (compile/export): the graph must stay guard-free
            return None
        self.validate(module, args, kwargs)
        return None

    def validate(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise :class:`InputError` unless ``module(*args, **kwargs)`` fits the spec."""
        given = kwargs if not args else self._merge(args, kwargs)
        ref = self._reference(module)
        known = self._repeats_last(given, ref)
        if known is None:
            known = self._memo_entry(given, ref)
        for name, upper in known.index_plan:  # index values: read on every call
            lo, hi = _extremes(given[name])
            if lo < 0 or (upper is not None and hi >= upper):
                self.check_indices(given, known.bound)  # the rule-by-rule check names the block and bound

    def _memo_entry(self, given: dict[str, Any], ref: Any) -> Known:
        """This call's signature's entry, checked and remembered if it is new; now the last."""
        key = self._signature(given, ref)
        known = self._passed.get(key) if key is not None else None
        if known is None:
            bound = self.check_shapes(given, ref)
            known = Known(bound, self._index_plan(given, bound), self._exact_check(given, ref))
            if key is not None:
                self._remember(key, known)
        elif known is self._last and known.exact is not None:
            # The last signature again, but its exact check missed: other strides,
            # requires_grad or dispatch state (inference mode). Rebuilt for this call.
            known = known._replace(exact=self._exact_check(given, ref))
            self._remember(key, known)
        self._last = known
        return known

    def _repeats_last(self, given: dict[str, Any], ref: Any) -> Known | None:
        """What the last call that passed found, if this one has its exact signature; else None.

        One C++ check (``TensorGuards``, what ``torch.compile`` guards its graphs with) of the
        probe parameter and every input (:meth:`_exact_check`). A training loop repeats one
        signature call after call, and inside a step (caches cold after the backward) this
        costs about two thirds of building and hashing :meth:`_signature` (benchmarks/NOTES.md,
        guards). Stricter than the signature (strides, requires_grad, inference mode), so a
        miss only means the memo is asked (:meth:`_memo_entry`)."""
        last = self._last
        exact = last.exact if last is not None else None
        if exact is None or ref is None or len(given) != len(self.names):
            return None
        names = self.names
        # Never a nested tensor: reading its strides aborts the process inside the C++
        # check. (A non-tensor has no `is_nested`: AttributeError, and the memo's path.)
        try:  # unrolled for one and two inputs: no list to build
            if len(names) == 1:
                t = given[names[0]]
                hit = not t.is_nested and exact.check(ref, t)
            elif len(names) == 2:
                t, u = given[names[0]], given[names[1]]
                hit = not (t.is_nested or u.is_nested) and exact.check(ref, t, u)
            else:
                ts = [given[name] for name in names]
                hit = not any(t.is_nested for t in ts) and exact.check(ref, *ts)
        except (KeyError, AttributeError):
            return None
        return last if hit else None

    def _exact_check(self, given: dict[str, Any], ref: Any) -> Any:
        """A C++ check that the probe parameter and the inputs come again with the same type,
        dtype, device, sizes, strides, requires_grad and dispatch keys; None without a probe,
        where torch has no such check, or for a tensor without strides (sparse)."""
        if ref is None:
            return None
        try:
            from torch._C._dynamo.guards import TensorGuards

            every = [ref, *(given[name] for name in self.names)]
            return TensorGuards(*every, dynamic_dims_sizes=[list(t.shape) for t in every],
                                dynamic_dims_strides=[list(t.stride()) for t in every])
        except Exception:  # a private torch API: without it every call takes the memo's path
            return None

    def _merge(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(self.names):
            raise InputError(f"the model takes {len(self.names)} inputs ({_names(self.names)}), "
                             f"got {len(args)} positional arguments")
        given = dict(kwargs)
        for name, value in zip(self.names, args):
            given[name] = value
        return given

    def _signature(self, given: dict[str, Any], ref: Any) -> tuple[Any, ...] | None:
        """What the dtype/rank/dim checks depend on; None when an input is missing, extra or not tensor-like.

        Asked when a call is not an exact repeat of the last one (:meth:`_repeats_last`).
        ``is_cpu or device``: a CPU tensor's device is the constant True, which spares
        building and hashing a torch.device (the common case on a CPU).
        """
        names = self.names
        if len(given) != len(names):
            return None
        sig: list[Any] = [None, None] if ref is None else [ref.dtype, ref.is_cpu or ref.device]
        try:
            for name in names:
                t = given[name]  # the class: a non-tensor never matches
                sig += (t.__class__, t.shape, t.dtype, t.is_cpu or t.device)
        except (KeyError, AttributeError, RuntimeError):  # RuntimeError: no sizes (a nested tensor)
            return None
        return tuple(sig)

    def _remember(self, key: tuple[Any, ...], known: Known) -> None:
        passed = self._passed
        if key not in passed and len(passed) >= self.MAX_SIGNATURES:
            passed.pop(next(iter(passed)), None)  # the oldest (None: another thread got there first)
        passed[key] = known

    def _index_plan(self, given: dict[str, Any], bound: dict[str, int]) -> tuple[tuple[str, int | None], ...]:
        """Per index input with values to read, the tightest bound of its rules (shapes only, so memoised)."""
        plan: dict[str, int | None] = {}
        for rule in self.indices:
            if not _readable_indices(given[rule.input]):
                continue
            upper = _upper(rule, given, bound)
            if rule.input not in plan:
                plan[rule.input] = upper
            elif upper is not None:
                old = plan[rule.input]
                plan[rule.input] = upper if old is None else min(old, upper)
        return tuple(plan.items())

    def _reference(self, module: Any) -> Any:
        """The probe parameter, looked up on every call (``.to()`` or ``load_state_dict`` may replace it)."""
        path = self.probe_path
        try:  # plain dict lookups: Module.get_parameter costs more than the whole check
            # unrolled for a top-level block's parameter and one level below (an MLP's layer)
            if len(path) == 2:
                return module._modules[path[0]]._parameters[path[1]]
            if len(path) == 3:
                return module._modules[path[0]]._modules[path[1]]._parameters[path[2]]
            for part in path[:-1]:
                module = module._modules[part]
            return module._parameters[path[-1]] if path else None
        except (KeyError, AttributeError):  # removed or renamed: skip dtype/device matching
            return None

    def check(self, given: dict[str, Any], ref: Any = None) -> None:
        """Raise :class:`InputError` unless ``given`` fits the spec (``ref``: a model parameter); no memo."""
        bound = self.check_shapes(given, ref)
        if self.indices:
            self.check_indices(given, bound)

    def check_shapes(self, given: dict[str, Any], ref: Any = None) -> dict[str, int]:
        """Names, types, dtypes, devices, ranks and dims; return the symbols the inputs bind."""
        import torch

        if given.keys() != self.name_set:
            self._names_error(given)
        bound: dict[str, int] = {}
        seen: dict[str, tuple[str, int]] = {}
        for rule in self.inputs:
            value = given[rule.name]
            if not isinstance(value, torch.Tensor):
                raise InputError(f"input `{rule.name}` should be a tensor {rule.declared}, got {type(value).__name__}",
                                 input=rule.name, expected="tensor", actual=type(value).__name__)
            if value.is_nested:  # no sizes to check (reading them raises inside torch)
                raise InputError(f"input `{rule.name}` should be a tensor {rule.declared}, got a nested tensor; "
                                 "pad it (torch.nested.to_padded_tensor) or pass its parts one call each",
                                 input=rule.name, expected="tensor", actual="nested tensor")
            _check_dtype(rule, value, ref)
            _check_shape(rule, value, bound, seen)
        for rule in self.compound:
            _check_compound(rule, given[rule.name], bound)
        return bound

    def check_indices(self, given: dict[str, Any], bound: dict[str, int]) -> None:
        """Index inputs hold values in ``[0, bound)``: one ``aminmax`` per input, however many blocks use it."""
        extremes: dict[str, tuple[int, int]] = {}
        for idx in self.indices:
            _check_index(idx, given, bound, extremes)

    def _names_error(self, given: dict[str, Any]) -> None:
        missing = [n for n in self.names if n not in given]
        if missing:
            raise InputError(f"missing input{'s' if len(missing) > 1 else ''} {_names(missing)}; "
                             f"the model takes {_names(self.names)}", input=missing[0])
        extra = [n for n in given if n not in self.name_set]
        raise InputError(f"unknown input{'s' if len(extra) > 1 else ''} {_names(extra)}; "
                         f"the model takes {_names(self.names)}", input=extra[0])


def _names(names: Any) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, _DTYPES[name])


def _check_dtype(rule: InputRule, t: Any, ref: Any) -> None:
    if rule.dtype == "float":
        ok = t.dtype == ref.dtype if ref is not None else t.is_floating_point()
    else:
        ok = t.dtype == _torch_dtype(rule.dtype)
    if not ok:
        if rule.dtype == "float":
            want = ref.dtype if ref is not None else None
            expected = str(want).replace("torch.", "") if want is not None else "a floating dtype"
            why = " (the dtype of the model's parameters)" if want is not None else ""
        else:
            expected, why = _DTYPES[rule.dtype], f" (declared `{rule.dtype}`)"
        actual = str(t.dtype).replace("torch.", "")
        raise InputError(f"input `{rule.name}` should be {expected}{why}, got {actual}",
                         input=rule.name, expected=expected, actual=actual)
    if ref is not None and t.dim() > 0 and t.device != ref.device:
        raise InputError(f"input `{rule.name}` is on {t.device}, the model on {ref.device}; move it with .to()",
                         input=rule.name, expected=str(ref.device), actual=str(t.device))


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
    import torch

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


# --------------------------------------------------------------------------- installing


def _is_compiling() -> bool:
    """``torch.compiler.is_compiling()``, bound on first use (this module must not import torch)."""
    global _is_compiling
    import torch

    _is_compiling = torch.compiler.is_compiling  # later calls go straight to torch
    return _is_compiling()


def _float_probe(module: Any) -> str | None:
    for name, p in module.named_parameters():
        if p.is_floating_point():
            return name
    return None


def guarded_call(module: Any, *args: Any, **kwargs: Any) -> Any:
    """A guarded GraphModule's call: :meth:`InputGuard.validate`, then the module's ``forward``.

    :func:`_attach` sets it twice. As the ``__call__`` of the class fx makes for each
    GraphModule, it replaces fx's ``__call__`` -> ``_wrapped_call`` -> ``nn.Module.__call__``
    route and its two frames. As the module's own ``_wrapped_call`` (which fx's
    ``__call__`` calls as ``self._wrapped_call(self, *args, **kwargs)``), it keeps the guard
    after ``recompile()`` puts fx's ``__call__`` back. Either way ``forward`` is untouched
    (``torch.export`` and ``inspect.signature`` see the compiler's). A plain function, so
    the module still pickles and deep-copies. The one thing skipped from fx's wrapper is
    its printout of the generated forward's source lines when the forward raises (dynamo
    will not trace fx's ``_WrappedCall`` either).

    After the check it takes ``nn.Module.__call__``'s own fast path itself: with no hook
    (the module's or global), no ``module.compile()`` and no ``torch.jit.trace`` running,
    ``nn.Module`` calls ``forward`` and nothing else, so this does too, without its two
    frames re-packing ``*args, **kwargs`` (0.2–1% of a small model's training step,
    benchmarks/NOTES.md). Anything else, and any call while compiling, goes through
    ``nn.Module.__call__``. (A forward pre-hook as the guard would put every call on
    ``nn.Module``'s slow path, which cost more than the checks.)
    """
    if _is_compiling():  # tracing (compile/export): the graph must stay guard-free
        return _module_call(module, *args, **kwargs)
    module.dsl_guard.validate(module, args, kwargs)
    forward_only = _forward_only
    if forward_only is not None and forward_only(module):
        return module.forward(*args, **kwargs)
    return _module_call(module, *args, **kwargs)


def _module_call(module: Any, *args: Any, **kwargs: Any) -> Any:
    """``nn.Module.__call__``, bound on first use (this module must not import torch)."""
    global _module_call
    import torch

    _module_call = torch.nn.Module.__call__
    return _module_call(module, *args, **kwargs)


# blocks/nn/module_calls.py's calls_forward_only, bound by _bind_torch when a guard is attached (torch
# is loaded by then); while None, guarded_call always takes nn.Module.__call__.
_forward_only: Any = None


def _bind_torch() -> None:
    """Bind the torch functions :func:`guarded_call` calls, and its test for the direct path
    if this torch has what it reads (then dynamo, tracing a first call, sees plain globals)."""
    global _is_compiling, _module_call, _forward_only
    import torch

    from dsl.blocks.nn import module_calls

    _is_compiling, _module_call = torch.compiler.is_compiling, torch.nn.Module.__call__
    if module_calls.SUPPORTED:
        _forward_only = module_calls.calls_forward_only


class _Reinstall:
    """``copy.deepcopy`` of a GraphModule rebuilds it from its graph; this puts the guard back."""

    def __init__(self, guard: InputGuard):
        self.guard = guard

    def __call__(self, module: Any) -> None:
        _attach(module, self.guard)  # the copy keeps this deepcopy hook itself


def _attach(module: Any, guard: InputGuard) -> None:
    module.dsl_guard = guard
    if _forward_only is None:
        _bind_torch()
    if hasattr(type(module), "_wrapped_call"):  # a GraphModule
        module._wrapped_call = guarded_call
        if "_wrapped_call" in vars(type(module)):  # the class fx made for this one module
            type(module).__call__ = guarded_call
    else:  # not a GraphModule: a forward pre-hook (slower, see guarded_call)
        module.register_forward_pre_hook(guard, with_kwargs=True)


def install_guards(module: Any, prog: Any, symbolic: Any = None) -> InputGuard:
    """Check every call of ``module`` (a GraphModule compiled from ``prog``) against the spec's inputs.

    ``symbolic``: :func:`symbolic_program`, whose free dims the guard does not pin."""
    guard = InputGuard(input_rules(prog, symbolic), index_rules(symbolic or prog), _float_probe(module))
    _attach(module, guard)
    register = getattr(module, "_register_deepcopy_hook", None)  # GraphModule only
    if register is not None:
        register(_Reinstall(guard))
    return guard


__all__ = ["InputError", "InputGuard", "guarded_call", "install_guards"]
