"""Tensor functions (no weights), lowered to the torch calls of the same meaning.

    cat(a, b, ..., dim=-1)             torch.cat([a, b, ...], dim)     sizes along `dim` add up
    stack(a, b, ..., dim=0)            torch.stack([a, b, ...], dim)   a new axis of size n
    mean / sum / max(x, dim, keepdim)  torch.mean / torch.sum / torch.amax
    flatten(x, start=0, end=-1)        torch.flatten(x, start_dim, end_dim)
    reshape(x, shape=[...])            torch.reshape(x, shape)         at most one -1
    transpose(x, dim0, dim1)           torch.transpose(x, dim0, dim1)

Dims may be negative (counted from the end) as in torch. An input written with
unknown leading dims (``[..., F]``) keeps them where the result is still sound:
a negative dim that reaches into the known trailing dims is fine, a
non-negative one needs the full rank and is a ShapeError.

Shapes:
    cat:       [A, F], [A, G] (dim=-1)     -> [A, F + G]
    stack:     [A, F], [A, F] (dim=0)      -> [2, A, F]
    mean:      [A, B, F] (dim=1)           -> [A, F]           (keepdim: [A, 1, F])
    sum, max:  [..., F] (dim=null)         -> []
    flatten:   [A, B, F] (start=1)         -> [A, B*F]
    reshape:   [A, 4] (shape=[-1, 2])      -> [2*A, 2]
    transpose: [A, B, F] (dim0=0, dim1=-1) -> [F, B, A]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

from pydantic import Field, field_validator

from dsl.language.registry import BuildCall, Decl, Lowered, Params, TensorArg, register
from dsl.language.shapes import (
    Dim,
    DimConflict,
    ShapeCall,
    ShapeError,
    Sym,
    TensorType,
    dim_add,
    dim_mul,
    dim_str,
)

# torch's type promotion among the spec dtypes: bool < int (int32) < long (int64) < float.
_DTYPE_ORDER = ("bool", "int", "long", "float")


def promote(dtypes: Sequence[str]) -> str:
    """The dtype torch gives a cat/stack of tensors with these dtypes."""
    return max(dtypes, key=_DTYPE_ORDER.index)


# --------------------------------------------------------------------------- dims


def axis(
    call: ShapeCall,
    name: str,
    dim: int,
    *,
    param: str = "dim",
    rank: int | None = None,
    lenient: bool = False,
    shown: str | None = None,
) -> int | None:
    """The position of ``dim`` in input ``name``'s known (trailing) dims.

    Follows torch: negative dims count from the end, and a 0-d tensor accepts
    dims -1 and 0. Returns None when ``dim`` falls among unknown leading dims
    (``...``). ``rank`` overrides the rank dims count against (stack counts
    against the output's rank). ``lenient``: the caller does not need the
    position (shape kept), so a non-negative dim on a ``...`` input is fine.
    ``shown`` is how messages name the input (default: its name).
    """
    t = call.type(name)
    shown = shown or f"`{name}`"
    n = len(t.shape) if rank is None else rank
    if t.variadic:
        if dim < 0:
            return n + dim if -dim <= n else None
        if lenient:
            return None
        raise ShapeError(
            f"`{call.block}` needs the rank of {shown} to use {param}={dim}",
            arg=name,
            label=f"{t} has an unknown number of leading dims",
            help=f"count from the end instead ({param}=-1 is the last dim), or declare the full shape",
            code="E0303",
        )
    wrap = max(n, 1)  # torch treats a 0-d tensor as 1-d when wrapping dims
    if not -wrap <= dim < wrap:
        raise ShapeError(
            f"{param}={dim} is out of range in `{call.block}`",
            arg=param,
            label=f"{shown} is {t}, rank {n}: {param} must be in {-wrap}..{wrap - 1}",
            code="E0303",
        )
    return dim % wrap


def dims_list(dim: int | Sequence[int] | None) -> list[int] | None:
    if dim is None:
        return None
    return [dim] if isinstance(dim, int) else list(dim)


def product(dims: Sequence[Dim | None]) -> Dim | None:
    """The symbolic product of ``dims``; None when one of them is unknown."""
    out: Dim = 1
    for d in dims:
        if d is None:
            return None
        out = dim_mul(out, d)
    return out


def _exact_div(total: Dim, by: int) -> Dim | None:
    """``total / by`` when every coefficient divides exactly, else None."""
    if isinstance(total, int):
        return total // by if total % by == 0 else None
    if all(c % by == 0 for c in total.terms.values()):
        return Sym.normalise({m: c // by for m, c in total.terms.items()})
    return None


def _need_float(call: ShapeCall, name: str) -> None:
    call.match(name, "...", dtype="float")


# --------------------------------------------------------------------------- cat / stack


class CatParams(Params):
    dim: int = Field(-1, description="the dim to concatenate along (negative counts from the end)")


class StackParams(Params):
    dim: int = Field(0, description="where the new axis goes (negative counts from the end)")


def _aligned_rank(call: ShapeCall, names: list[str]) -> tuple[bool, int]:
    """(unknown leading dims?, number of known trailing dims) of the joined inputs."""
    types = {n: call.type(n) for n in names}
    fixed = [(n, t) for n, t in types.items() if not t.variadic]
    if not fixed:
        return True, max(len(t.shape) for t in types.values())
    first, ft = fixed[0]
    rank = len(ft.shape)
    for n, t in types.items():
        if (not t.variadic and len(t.shape) != rank) or (t.variadic and len(t.shape) > rank):
            raise ShapeError(
                f"rank mismatch in {_nth(names, n)} of `{call.block}`",
                arg=n,
                label=f"expected rank {rank} like {_nth(names, first)} ({ft}), found {t}",
                code="E0303",
            )
    return False, rank


def _nth(names: list[str], name: str) -> str:
    """How messages name one of the joined tensors: by position, as the user wrote them."""
    return f"argument {names.index(name) + 1}"


def _column(call: ShapeCall, names: list[str], n: int, j: int) -> list[tuple[str, Dim | None]]:
    """The dims at aligned position ``j`` of the inputs that know it."""
    out = []
    for name in names:
        t = call.type(name)
        k = j - (n - len(t.shape))
        if k >= 0:
            out.append((name, t.shape[k]))
    return out


def _unify_column(call: ShapeCall, names: list[str], n: int, j: int, why: str) -> Dim | None:
    got: Dim | None = None
    first = names[0]
    for name, d in _column(call, names, n, j):
        try:
            got = call.env.unify(got, d)
        except DimConflict:
            raise ShapeError(
                f"shape mismatch in {_nth(names, name)} of `{call.block}`",
                arg=name,
                label=f"found {call.type(name)}, but {_nth(names, first)} is {call.type(first)}: {why}",
            ) from None
    return got


def _joined_types(call: ShapeCall) -> tuple[list[str], str]:
    names = list(call.inputs)
    if not names:
        raise ShapeError(f"`{call.block}` needs at least one tensor", code="E0202")
    return names, promote([call.type(n).dtype for n in names])


def infer_cat(call: ShapeCall, p: CatParams) -> list[TensorType]:
    names, dtype = _joined_types(call)
    variadic, n = _aligned_rank(call, names)
    if not variadic and n == 0:
        raise ShapeError(
            "`cat` cannot join 0-d tensors", arg=names[0],
            label=f"found {call.type(names[0])}", help="use stack to join scalars", code="E0303",
        )
    # Count dims against an input that knows all `n` aligned dims (one of full rank if any).
    ref = max(names, key=lambda name: (not call.type(name).variadic, len(call.type(name).shape)))
    at = axis(call, ref, p.dim, shown=_nth(names, ref))
    why = f"all inputs must agree outside dim {p.dim}"
    shape: list[Dim | None] = []
    for j in range(n):
        if j != at:
            shape.append(_unify_column(call, names, n, j, why))
            continue
        col = _column(call, names, n, j)
        total: Dim | None = 0
        for _, d in col:
            total = None if d is None or total is None else dim_add(total, call.env.resolve(d))
        shape.append(total if len(col) == len(names) else None)
    why = f"cat of {len(names)} tensors along dim {p.dim} adds their sizes"
    return [TensorType(tuple(call.env.resolve(d) for d in shape), dtype, variadic, why)]


def infer_stack(call: ShapeCall, p: StackParams) -> list[TensorType]:
    names, dtype = _joined_types(call)
    variadic, n = _aligned_rank(call, names)
    why = "all inputs must have the same shape"
    shape = [_unify_column(call, names, n, j, why) for j in range(n)]
    t0 = TensorType(tuple(shape), dtype, variadic)
    probe = ShapeCall(call.block, {names[0]: t0}, call.env)
    pos = axis(probe, names[0], p.dim, rank=n + 1, shown=f"each of the {len(names)} inputs")
    if pos is not None:
        shape.insert(pos, len(names))
    why = f"stack of {len(names)} tensors adds an axis of size {len(names)} at dim {p.dim}"
    return [TensorType(tuple(call.env.resolve(d) for d in shape), dtype, variadic, why)]


def lower_cat(call: BuildCall, p: CatParams) -> Lowered:
    import torch

    return Lowered(torch.cat, kwargs={"dim": p.dim}, pack=True)


def lower_stack(call: BuildCall, p: StackParams) -> Lowered:
    import torch

    return Lowered(torch.stack, kwargs={"dim": p.dim}, pack=True)


# --------------------------------------------------------------------------- reductions

DimsArg = int | Annotated[list[int], Field(min_length=1)] | None


class ReduceParams(Params):
    dim: DimsArg = Field(None, description="dim or dims to reduce; null reduces every dim")
    keepdim: bool = Field(False, description="keep reduced dims with size 1")

    @field_validator("dim")
    @classmethod
    def _distinct(cls, v: Any) -> Any:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"dims must be distinct, got {v}")
        return v


def _reduce(call: ShapeCall, p: ReduceParams, fn: str, dtype: str) -> TensorType:
    t = call.type("x")
    dims = dims_list(p.dim)
    if dims is None:
        why = f"{fn}() over every dim" + (" keeping them as 1" if p.keepdim else " gives a scalar")
        if p.keepdim:
            return TensorType((1,) * len(t.shape), dtype, t.variadic, why)
        return TensorType((), dtype, False, why)
    positions: set[int] = set()
    for d in dims:
        pos = axis(call, "x", d)
        if pos is not None and pos in positions:
            raise ShapeError(
                f"`{fn}` reduces the same dim twice", arg="dim",
                label=f"dims {dims} name one axis twice for `x` {t}", code="E0401",
            )
        if pos is not None:
            positions.add(pos)
    shape = [1 if i in positions else d for i, d in enumerate(t.shape) if p.keepdim or i not in positions]
    why = f"{fn}(dim={p.dim}" + (", keepdim=true)" if p.keepdim else ") removes the reduced dims")
    return TensorType(tuple(shape), dtype, t.variadic, why)


def infer_mean(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    _need_float(call, "x")
    return [_reduce(call, p, "mean", "float")]


def infer_sum(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    dtype = call.type("x").dtype
    return [_reduce(call, p, "sum", "float" if dtype == "float" else "long")]


def infer_max(call: ShapeCall, p: ReduceParams) -> list[TensorType]:
    return [_reduce(call, p, "max", call.type("x").dtype)]


def _reduce_kwargs(p: ReduceParams) -> dict[str, Any]:
    dim = tuple(p.dim) if isinstance(p.dim, list) else p.dim  # a copy the graph cannot alias
    if p.keepdim:  # torch wants dim spelled out (None included) next to keepdim
        return {"dim": dim, "keepdim": True}
    return {} if dim is None else {"dim": dim}


def lower_mean(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    return Lowered(torch.mean, kwargs=_reduce_kwargs(p))


def lower_sum(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    return Lowered(torch.sum, kwargs=_reduce_kwargs(p))


def lower_max(call: BuildCall, p: ReduceParams) -> Lowered:
    import torch

    # amax, not max: torch.max(x, dim) returns (values, indices); `max` here means the values.
    return Lowered(torch.amax, kwargs=_reduce_kwargs(p))


# --------------------------------------------------------------------------- flatten


class FlattenParams(Params):
    start: int = Field(0, description="first dim to flatten (start_dim)")
    end: int = Field(-1, description="last dim to flatten, inclusive (end_dim)")


def infer_flatten(call: ShapeCall, p: FlattenParams) -> list[TensorType]:
    t = call.type("x")
    why = f"flatten(start={p.start}, end={p.end}) multiplies the flattened dims"
    # start=0 on a `...` input is sound: the unknown leading dims all go into one axis.
    s = None if t.variadic and p.start == 0 else axis(call, "x", p.start, param="start")
    e = axis(call, "x", p.end, param="end")
    if not t.variadic and not t.shape:
        return [TensorType((1,), t.dtype, False, "flatten of a 0-d tensor gives [1]")]
    if (s is not None and e is not None and s > e) or (t.variadic and p.start < 0 and p.start > p.end):
        raise ShapeError(
            "`flatten` start comes after end", arg="start",
            label=f"start={p.start} is after end={p.end} for `x` {t}", code="E0401",
        )
    if e is None:  # every flattened dim is among the unknown leading ones
        return [TensorType(t.shape, t.dtype, True, why)]
    if s is None:  # some flattened dims are unknown: their product is a new symbol
        lead: tuple[Dim | None, ...] = (call.fresh("Flat"),)
        return [TensorType(lead + t.shape[e + 1:], t.dtype, p.start != 0, why)]
    merged = product(t.shape[s:e + 1])
    return [TensorType(t.shape[:s] + (merged,) + t.shape[e + 1:], t.dtype, t.variadic, why)]


def lower_flatten(call: BuildCall, p: FlattenParams) -> Lowered:
    import torch

    kw = {}
    if p.start != 0:
        kw["start_dim"] = p.start
    if p.end != -1:
        kw["end_dim"] = p.end
    return Lowered(torch.flatten, kwargs=kw)


# --------------------------------------------------------------------------- reshape


class ReshapeParams(Params):
    shape: list[int] = Field(description="the new shape: sizes >= 0, at most one -1 (inferred)")

    @field_validator("shape")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if any(s < -1 for s in v):
            raise ValueError(f"sizes must be >= 0 or -1, got {v}")
        if v.count(-1) > 1:
            raise ValueError(f"at most one size may be -1, got {v}")
        return v


def infer_reshape(call: ShapeCall, p: ReshapeParams) -> list[TensorType]:
    t = call.type("x")
    total = None if t.variadic else product(t.shape)
    known = product([s for s in p.shape if s != -1])
    assert isinstance(known, int)
    shape: list[Dim | None] = list(p.shape)
    why = f"reshape(shape={p.shape})"
    if -1 in p.shape:
        fill = _exact_div(total, known) if total is not None and known else None
        if fill is None and isinstance(total, int):
            _count_error(call, t, p, f"{total} elements do not split into blocks of {known}")
        shape[p.shape.index(-1)] = fill if fill is not None else call.fresh("Rest")
        why += " infers the -1 from the element count"
    elif total is not None:
        try:
            call.env.unify(total, known)
        except DimConflict:
            _count_error(call, t, p, f"{dim_str(total)} elements cannot become {known}")
    return [TensorType(tuple(shape), t.dtype, False, why)]


def _count_error(call: ShapeCall, t: TensorType, p: ReshapeParams, why: str) -> NoReturn:
    raise ShapeError(
        "`reshape` cannot change the number of elements", arg="shape",
        label=f"`x` is {t}: {why}", help="put -1 in the shape to infer one size", code="E0305",
    )


def lower_reshape(call: BuildCall, p: ReshapeParams) -> Lowered:
    import torch

    return Lowered(torch.reshape, args=(tuple(p.shape),))


# --------------------------------------------------------------------------- transpose


class TransposeParams(Params):
    dim0: int = Field(description="first dim to swap")
    dim1: int = Field(description="second dim to swap")


def infer_transpose(call: ShapeCall, p: TransposeParams) -> list[TensorType]:
    t = call.type("x")
    a = axis(call, "x", p.dim0, param="dim0")
    b = axis(call, "x", p.dim1, param="dim1")
    shape = list(t.shape)
    if shape:
        da = shape[a] if a is not None else None
        db = shape[b] if b is not None else None
        if a is not None:
            shape[a] = db
        if b is not None:
            shape[b] = da
    why = f"transpose(dim0={p.dim0}, dim1={p.dim1}) swaps two dims"
    return [TensorType(tuple(shape), t.dtype, t.variadic, why)]


def lower_transpose(call: BuildCall, p: TransposeParams) -> Lowered:
    import torch

    return Lowered(torch.transpose, args=(p.dim0, p.dim1))


# --------------------------------------------------------------------------- registration

_X = (TensorArg("x", doc="input tensor"),)
_MANY = (TensorArg("tensors", variadic=True, doc="tensors to join"),)

_TABLE: tuple[tuple[str, type[Params], tuple[TensorArg, ...], Any, Any, str, str], ...] = (
    ("cat", CatParams, _MANY, infer_cat, lower_cat, "[A, F], [A, G] -> [A, F + G] (dim=-1)",
     "Concatenate tensors along `dim` (torch.cat); they agree on every other dim."),
    ("stack", StackParams, _MANY, infer_stack, lower_stack, "[A, F], [A, F] -> [2, A, F] (dim=0)",
     "Stack same-shaped tensors along a new axis at `dim` (torch.stack)."),
    ("mean", ReduceParams, _X, infer_mean, lower_mean, "[A, F] -> [A] (dim=-1)",
     "Mean over `dim` (torch.mean); dim=null averages every element. Float input."),
    ("sum", ReduceParams, _X, infer_sum, lower_sum, "[A, F] -> [A] (dim=-1)",
     "Sum over `dim` (torch.sum); integer and bool inputs sum to long, as in torch."),
    ("max", ReduceParams, _X, infer_max, lower_max, "[A, F] -> [A] (dim=-1)",
     "Largest value over `dim` (torch.amax: the values, not the indices)."),
    ("flatten", FlattenParams, _X, infer_flatten, lower_flatten, "[A, B, F] -> [A*B*F]",
     "Merge dims start..end (inclusive) into one (torch.flatten)."),
    ("reshape", ReshapeParams, _X, infer_reshape, lower_reshape, "[A, 4] -> [2*A, 2] (shape=[-1, 2])",
     "View the elements in a new shape (torch.reshape); one -1 is inferred."),
    ("transpose", TransposeParams, _X, infer_transpose, lower_transpose, "[A, B] -> [B, A]",
     "Swap two dims (torch.transpose)."),
)

for _name, _params, _inputs, _infer, _lower, _sig, _doc in _TABLE:
    register(
        Decl(
            name=_name,
            kind="function",
            params=_params,
            inputs=_inputs,
            outputs=("y",),
            infer=_infer,
            lower=_lower,
            doc=f"{_doc}\n\nShapes:\n    {_sig}\n",
            signature=_sig,
        )
    )
