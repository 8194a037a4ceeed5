"""Tensor functions (no weights), lowered to the torch calls of the same meaning.

    cat(a, b, ..., dim=-1)             torch.cat([a, b, ...], dim)     sizes along `dim` add up
    stack(a, b, ..., dim=0)            torch.stack([a, b, ...], dim)   a new axis of size n
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
    flatten:   [A, B, F] (start=1)         -> [A, B*F]
    reshape:   [A, 4] (shape=[-1, 2])      -> [2*A, 2]
    transpose: [A, B, F] (dim0=0, dim1=-1) -> [F, B, A]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NoReturn

from pydantic import Field, field_validator

from dsl.language.registry import BuildCall, Decl, Lowered, Params, Size, TensorArg, register
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


def _div(total: Dim, by: Dim) -> Dim | None:
    """``total / by`` as a dim when it is one for every size of the symbols, else None."""
    if isinstance(by, int):
        return _exact_div(total, by)
    if isinstance(total, Sym):  # divide monomial by monomial when ``by`` is one term
        if len(by.terms) != 1:
            return None
        ((mono, coeff),) = by.terms.items()
        out: dict[tuple[str, ...], int] = {}
        for m, c in total.terms.items():
            rest = list(m)
            for s in mono:
                if s not in rest:
                    return None
                rest.remove(s)
            if c % coeff:
                return None
            out[tuple(rest)] = c // coeff
        return Sym.normalise(out)
    return None


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
    shape: list[Size] = Field(description="the new shape: positive sizes or dims (T), at most one -1 (inferred)")

    @field_validator("shape")
    @classmethod
    def _sizes(cls, v: list[Any]) -> list[Any]:
        ints = [s for s in v if isinstance(s, int)]
        if any(s == 0 for s in ints):
            raise ValueError(f"a size of 0 makes an empty tensor; to keep a dim write its name (B) or -1, got {v}")
        if any(s < -1 for s in ints):
            raise ValueError(f"sizes must be positive or -1, got {v}")
        if ints.count(-1) > 1:
            raise ValueError(f"at most one size may be -1, got {v}")
        return v


def infer_reshape(call: ShapeCall, p: ReshapeParams) -> list[TensorType]:
    t = call.type("x")
    total = None if t.variadic else product(t.shape)
    sizes = [call.env.resolve(s) for s in p.shape]
    known = product([s for s in sizes if s != -1])
    shape: list[Dim | None] = list(sizes)
    why = f"reshape(shape={p.shape})"
    if -1 in sizes:
        fill = _div(total, known) if total is not None and known else None
        if fill is None and total is not None:
            _count_error(call, t, p, f"{dim_str(total)} elements do not split into blocks of {dim_str(known)}"
                         + ("" if isinstance(total, int) else " for every size of its dims"))
        shape[sizes.index(-1)] = fill if fill is not None else call.fresh("Rest")
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
        label=f"`x` is {t}: {why}", code="E0305",
        help="keep the batch dim by name (reshape(x, [B, ...])) or -1, so every batch size fits",
    )


def lower_reshape(call: BuildCall, p: ReshapeParams) -> Lowered:
    import torch

    return Lowered(torch.reshape, args=(tuple(p.shape),))


# --------------------------------------------------------------------------- more shape functions


class DimParams(Params):
    dim: int = Field(description="where (negative counts from the end)")


class OptionalDimParams(Params):
    dim: int | None = Field(None, description="the size-1 dim to drop; null drops every size-1 dim")


class PermuteParams(Params):
    dims: list[int] = Field(description="the new order of the dims")


class ExpandParams(Params):
    shape: list[Size] = Field(description="the new sizes; -1 keeps a dim; new leading dims are added")


class ChunkParams(Params):
    chunks: int = Field(gt=0, description="how many equal pieces")
    dim: int = Field(-1, description="the dim to cut")


class SplitParams(Params):
    sizes: list[Size] = Field(min_length=1, description="the size of each piece, in order")
    dim: int = Field(-1, description="the dim to cut")


class ToParams(Params):
    dtype: Literal["float", "long", "int", "bool"] = Field(description="the new dtype")


class SelectParams(Params):
    dim: int = Field(description="the dim the indices pick along")


def infer_unsqueeze(call: ShapeCall, p: DimParams) -> list[TensorType]:
    t = call.type("x")
    probe = ShapeCall(call.block, {"x": t}, call.env)
    pos = axis(probe, "x", p.dim, rank=len(t.shape) + 1)
    shape = list(t.shape)
    if pos is not None:
        shape.insert(pos, 1)
    return [TensorType(tuple(shape), t.dtype, t.variadic, f"unsqueeze(dim={p.dim}) adds a dim of size 1")]


def infer_squeeze(call: ShapeCall, p: OptionalDimParams) -> list[TensorType]:
    t = call.type("x")
    if p.dim is None:
        if t.variadic or any(not isinstance(d, int) for d in t.shape):
            raise ShapeError("`squeeze` without dim= needs every size known", arg="x", label=f"`x` is {t}",
                             help="give the dim: squeeze(x, dim=1)", code="E0305")
        return [TensorType(tuple(d for d in t.shape if d != 1), t.dtype, False, "squeeze drops the size-1 dims")]
    pos = axis(call, "x", p.dim)
    shape = list(t.shape)
    if pos is not None:
        size = call.env.resolve(shape[pos])
        if isinstance(size, int) and size != 1:  # torch leaves the tensor as it is; a mistake in a spec
            raise ShapeError(f"`squeeze` drops a dim of size 1, and dim {p.dim} is {size}", arg="dim",
                             label=f"`x` is {t}", code="E0305")
        call.unify(size, 1, arg="x", what=f"dim {p.dim} must be 1")
        del shape[pos]
    return [TensorType(tuple(shape), t.dtype, t.variadic, f"squeeze(dim={p.dim}) drops a dim of size 1")]


def infer_permute(call: ShapeCall, p: PermuteParams) -> list[TensorType]:
    t = call.type("x")
    if t.variadic:
        raise ShapeError("`permute` needs the full shape of `x`", arg="x", label=f"`x` is {t}", code="E0303")
    n = len(t.shape)
    positions = [axis(call, "x", d, param="dims") for d in p.dims]
    if len(p.dims) != n or sorted(positions) != list(range(n)):  # type: ignore[type-var]
        raise ShapeError(f"`permute` needs each of the {n} dims once", arg="dims",
                         label=f"dims={p.dims} for `x` {t}", code="E0401")
    return [TensorType(tuple(t.shape[i] for i in positions), t.dtype, False, f"permute({p.dims})")]  # type: ignore[index]


def infer_expand(call: ShapeCall, p: ExpandParams) -> list[TensorType]:
    t = call.type("x")
    sizes = [call.env.resolve(s) for s in p.shape]
    if t.variadic or len(sizes) < len(t.shape):
        raise ShapeError("`expand` needs at least the rank of `x`", arg="shape", label=f"`x` is {t}", code="E0303")
    lead = len(sizes) - len(t.shape)
    out: list[Any] = list(sizes[:lead])
    for d, s in zip(t.shape, sizes[lead:], strict=True):
        if s == -1:
            out.append(d)
        elif call.env.resolve(d) == 1:
            out.append(s)
        else:
            out.append(call.unify(d, s, arg="x", what="expand keeps a dim that is not 1"))
    return [TensorType(tuple(out), t.dtype, False, f"expand({p.shape})")]


def infer_chunk(call: ShapeCall, p: ChunkParams) -> list[TensorType]:
    t = call.type("x")
    pos = axis(call, "x", p.dim)
    shape = list(t.shape)
    if pos is not None:
        piece = _exact_div(call.env.resolve(shape[pos]), p.chunks) if shape[pos] is not None else None
        if piece is None:
            raise ShapeError(f"`chunk` cuts dim {p.dim} into {p.chunks} equal pieces, and {shape[pos]} does not split",
                             arg="chunks", label=f"`x` is {t}", help="use split(x, [sizes], dim=...)", code="E0305")
        shape[pos] = piece
    return [TensorType(tuple(shape), t.dtype, t.variadic, f"chunk({p.chunks}) of {t}")] * p.chunks


def infer_split(call: ShapeCall, p: SplitParams) -> list[TensorType]:
    t = call.type("x")
    pos = axis(call, "x", p.dim)
    if pos is None:
        return [t] * len(p.sizes)
    total: Dim = 0
    for s in p.sizes:
        total = dim_add(total, call.env.resolve(s))
    call.unify(t.shape[pos], total, arg="sizes", what=f"the pieces must add up to dim {p.dim}")
    outs = []
    for s in p.sizes:
        shape = list(t.shape)
        shape[pos] = call.env.resolve(s)
        outs.append(TensorType(tuple(shape), t.dtype, t.variadic, f"split({p.sizes}) of {t}"))
    return outs


def infer_to(call: ShapeCall, p: ToParams) -> list[TensorType]:
    return [call.keep("x", dtype=p.dtype, why=f"to(dtype={p.dtype})")]


def infer_index_select(call: ShapeCall, p: SelectParams) -> list[TensorType]:
    t = call.type("x")
    k = call.match("index", "K", dtype=("long", "int")).K
    pos = axis(call, "x", p.dim)
    shape = list(t.shape)
    if pos is not None:
        shape[pos] = k
    return [TensorType(tuple(shape), t.dtype, t.variadic, f"index_select picks {k} entries along dim {p.dim}")]


def infer_gather(call: ShapeCall, p: SelectParams) -> list[TensorType]:
    t, idx = call.type("x"), call.type("index")
    if idx.dtype not in ("long", "int"):
        raise ShapeError("dtype mismatch in argument `index` of `gather`", arg="index",
                         label=f"expected long, found {idx.dtype}", code="E0302")
    if not t.variadic and not idx.variadic and len(t.shape) != len(idx.shape):
        raise ShapeError("`gather` needs `index` of the rank of `x`", arg="index",
                         label=f"`x` is {t}, `index` is {idx}", code="E0303")
    axis(call, "x", p.dim)
    return [idx.with_dtype(t.dtype)]


def _lower_torch(name: str, *fields: str, kw: tuple[str, ...] = ()) -> Any:
    def lower(call: BuildCall, p: Any) -> Lowered:
        import torch

        args = tuple(tuple(v) if isinstance(v := getattr(p, f), list) else v for f in fields)
        kwargs = {k: getattr(p, k) for k in kw if getattr(p, k) is not None}
        return Lowered(getattr(torch, name), args=args, kwargs=kwargs)

    return lower


def lower_expand(call: BuildCall, p: ExpandParams) -> Lowered:
    from dsl.blocks.nn.tensors import expand

    return Lowered(expand, args=(list(p.shape),))


def lower_to(call: BuildCall, p: ToParams) -> Lowered:
    from dsl.blocks.nn.tensors import to

    return Lowered(to, args=(p.dtype,))


def lower_index_select(call: BuildCall, p: SelectParams) -> Lowered:
    import torch

    return Lowered(torch.index_select, kwargs={"dim": p.dim}, keywords=("index",))


def lower_gather(call: BuildCall, p: SelectParams) -> Lowered:
    import torch

    return Lowered(torch.gather, kwargs={"dim": p.dim}, keywords=("index",))


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
    ("flatten", FlattenParams, _X, infer_flatten, lower_flatten, "[A, B, F] -> [A*B*F]",
     "Merge dims start..end (inclusive) into one (torch.flatten)."),
    ("reshape", ReshapeParams, _X, infer_reshape, lower_reshape, "[A, 4] -> [2*A, 2] (shape=[-1, 2])",
     "View the elements in a new shape (torch.reshape); one -1 is inferred; sizes may be dims (B, T)."),
    ("transpose", TransposeParams, _X, infer_transpose, lower_transpose, "[A, B] -> [B, A]",
     "Swap two dims (torch.transpose)."),
    ("unsqueeze", DimParams, _X, infer_unsqueeze, _lower_torch("unsqueeze", "dim"), "[A, F] -> [A, 1, F] (dim=1)",
     "Add a dim of size 1 at `dim` (torch.unsqueeze)."),
    ("squeeze", OptionalDimParams, _X, infer_squeeze, _lower_torch("squeeze", kw=("dim",)), "[A, 1, F] -> [A, F]",
     "Drop a dim of size 1 (torch.squeeze)."),
    ("permute", PermuteParams, _X, infer_permute, _lower_torch("permute", "dims"), "[A, B, C] -> [C, A, B]",
     "Reorder the dims (torch.permute)."),
    ("expand", ExpandParams, _X, infer_expand, lower_expand, "[1, F] -> [B, F] (shape=[B, -1])",
     "Repeat size-1 dims without copying (Tensor.expand); -1 keeps a dim."),
    ("chunk", ChunkParams, _X, infer_chunk, _lower_torch("chunk", "chunks", kw=("dim",)), "[A, 2F] -> [A, F], [A, F]",
     "Cut `dim` into `chunks` equal pieces, one output each (torch.chunk)."),
    ("split", SplitParams, _X, infer_split, _lower_torch("split", "sizes", kw=("dim",)), "[A, F+G] -> [A, F], [A, G]",
     "Cut `dim` into pieces of the given sizes, one output each (torch.split)."),
    ("to", ToParams, _X, infer_to, lower_to, "[...] -> [...] dtype",
     "The same values as another dtype (Tensor.to)."),
    ("index_select", SelectParams, (TensorArg("x", doc="input tensor"), TensorArg("index", doc="long [K]")),
     infer_index_select, lower_index_select, "[N, F], [K] long -> [K, F] (dim=0)",
     "Whole entries of `x` along `dim`, picked by `index` (torch.index_select)."),
    ("gather", SelectParams, (TensorArg("x", doc="input tensor"), TensorArg("index", doc="long, the rank of x")),
     infer_gather, lower_gather, "[N, F], [N, K] long -> [N, K] (dim=1)",
     "One element of `x` per entry of `index`, along `dim` (torch.gather)."),
)

_POSITIONAL = {"reshape": ("x", "shape"), "transpose": ("x", "dim0", "dim1"), "flatten": ("x", "start", "end"),
               "unsqueeze": ("x", "dim"), "squeeze": ("x", "dim"), "permute": ("x", "dims"), "expand": ("x", "shape"),
               "chunk": ("x", "chunks", "dim"), "split": ("x", "sizes", "dim"), "to": ("x", "dtype"),
               "index_select": ("x", "dim", "index"), "gather": ("x", "dim", "index")}

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
            positional=_POSITIONAL.get(_name),
            differentiable=_name != "to",
            doc=f"{_doc}\n\nShapes:\n    {_sig}\n",
            signature=_sig,
        )
    )
