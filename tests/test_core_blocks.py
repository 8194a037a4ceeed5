"""Core blocks and functions (DESIGN §7): shape rules agree with the built modules,
bad shapes/dtypes are ShapeErrors with readable labels, bad hyperparameters are
rejected. Table-driven: one row per case; every core name has rows."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from helpers import build, decl, infer, tensor_type
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dsl.language.registry import load
from dsl.language.shapes import ShapeError, Sym, TensorType

CORE = (
    "Linear MLP Embedding LayerNorm BatchNorm Dropout MultiheadAttention "
    "relu gelu elu silu tanh sigmoid softmax log_softmax "
    "cat stack mean sum max flatten reshape transpose"
).split()

LEAD = (2, 3)  # concrete sizes standing in for `...`
DIMS = {"N": 5, "B": 2, "T": 3, "S": 4, "F": 6, "G": 2, "D": 8, "E": 7, "A": 4}
TORCH_DTYPE = {"float": torch.float32, "long": torch.int64, "int": torch.int32, "bool": torch.bool}


@dataclass
class Row:
    name: str
    inputs: tuple[str, ...]
    kw: dict[str, Any] = field(default_factory=dict)
    expect: tuple[str, ...] | None = None  # the symbolic output types, as text
    opt: dict[str, str] = field(default_factory=dict)  # optional tensor inputs

    def __str__(self) -> str:
        args = ", ".join([*self.inputs, *(f"{k}={v}" for k, v in {**self.opt, **self.kw}.items())])
        return f"{self.name}({args})"


R = Row
ROWS = [
    R("Linear", ("[N, F]",), {"out": 4}, ("[N, 4]",)),
    R("Linear", ("[..., F]",), {"out": 3, "bias": False}, ("[..., 3]",)),
    R("MLP", ("[N, F]",), {"hidden": 8, "out": 3}, ("[N, 3]",)),
    R("MLP", ("[..., F]",), {"hidden": 4, "out": 2, "layers": 3, "act": "relu", "dropout": 0.1}, ("[..., 2]",)),
    R("MLP", ("[B, T, F]",), {"hidden": 4, "out": 5, "layers": 1}, ("[B, T, 5]",)),
    R("Embedding", ("[N] long",), {"num": 10, "dim": 4}, ("[N, 4]",)),
    R("Embedding", ("[B, T] int",), {"num": 3, "dim": 2, "padding_idx": 0}, ("[B, T, 2]",)),
    R("Embedding", ("[..., T] long",), {"num": 5, "dim": 3}, ("[..., T, 3]",)),
    R("LayerNorm", ("[N, F]",), {}, ("[N, F]",)),
    R("LayerNorm", ("[..., D]",), {"eps": 1e-6, "affine": False}, ("[..., D]",)),
    R("BatchNorm", ("[B, F]",), {}, ("[B, F]",)),
    R("BatchNorm", ("[B, F, T]",), {"momentum": None}, ("[B, F, T]",)),
    R("BatchNorm", ("[B, F, T, S]",), {}, ("[B, F, T, S]",)),
    R("Dropout", ("[..., F]",), {"p": 0.3}, ("[..., F]",)),
    R("MultiheadAttention", ("[B, T, D]",), {"heads": 2}, ("[B, T, D]",)),
    R("MultiheadAttention", ("[B, T, D]",), {"heads": 4, "bias": False}, ("[B, T, D]",), {"k": "[B, S, D]"}),
    R("MultiheadAttention", ("[B, T, D]",), {"heads": 1}, ("[B, T, D]",), {"k": "[B, S, F]", "v": "[B, S, G]"}),
    *[R(fn, ("[..., F]",), {}, ("[..., F]",)) for fn in ("relu", "gelu", "elu", "silu", "tanh", "sigmoid")],
    R("gelu", ("[N, F]",), {"approximate": "tanh"}, ("[N, F]",)),
    R("elu", ("[N, F]",), {"alpha": 0.5}, ("[N, F]",)),
    R("softmax", ("[N, F]",), {}, ("[N, F]",)),
    R("softmax", ("[..., T, F]",), {"dim": -2}, ("[..., T, F]",)),
    R("log_softmax", ("[B, T, F]",), {"dim": 1}, ("[B, T, F]",)),
    R("cat", ("[N, F]", "[N, G]"), {}, ("[N, F + G]",)),
    R("cat", ("[N, 3]", "[N, 5]", "[N, 1]"), {"dim": 1}, ("[N, 9]",)),
    R("cat", ("[N, F]", "[A, F]"), {"dim": 0}, ("[A + N, F]",)),
    R("cat", ("[..., T, F]", "[..., T, G]"), {"dim": -1}, ("[..., T, F + G]",)),
    R("cat", ("[N] long", "[A] int"), {}, ("[A + N] long",)),
    R("stack", ("[N, F]", "[N, F]"), {}, ("[2, N, F]",)),
    R("stack", ("[N, F]", "[N, F]", "[N, F]"), {"dim": -1}, ("[N, F, 3]",)),
    R("stack", ("[..., F]", "[..., F]"), {"dim": -2}, ("[..., 2, F]",)),
    R("mean", ("[B, T, F]",), {"dim": 1}, ("[B, F]",)),
    R("mean", ("[B, T, F]",), {"dim": [0, -1], "keepdim": True}, ("[1, T, 1]",)),
    R("mean", ("[B, T, F]",), {}, ("[]",)),
    R("sum", ("[..., T, F]",), {"dim": -1}, ("[..., T]",)),
    R("sum", ("[B, T] long",), {"keepdim": True}, ("[1, 1] long",)),
    R("sum", ("[B, T] bool",), {"dim": 0}, ("[T] long",)),
    R("max", ("[B, T, F]",), {"dim": -2}, ("[B, F]",)),
    R("max", ("[B, T] long",), {"dim": [0, 1]}, ("[] long",)),
    R("flatten", ("[B, T, F]",), {}, ("[B*F*T]",)),
    R("flatten", ("[B, T, F]",), {"start": 1}, ("[B, F*T]",)),
    R("flatten", ("[B, T, S, F]",), {"start": 1, "end": 2}, ("[B, S*T, F]",)),
    R("flatten", ("[..., T, F]",), {"start": -2}, ("[..., F*T]",)),
    R("reshape", ("[A, 4]",), {"shape": [-1, 2]}, ("[2*A, 2]",)),
    R("reshape", ("[B, T, 6]",), {"shape": [3, -1]}, ("[3, 2*B*T]",)),
    R("reshape", ("[2, 6]",), {"shape": [3, 4]}, ("[3, 4]",)),
    R("reshape", ("[B, 6] long",), {"shape": [-1]}, ("[6*B] long",)),
    R("transpose", ("[B, T, F]",), {"dim0": 0, "dim1": -1}, ("[F, T, B]",)),
    R("transpose", ("[..., T, F]",), {"dim0": -1, "dim1": -2}, ("[..., F, T]",)),
]


# --------------------------------------------------------------------------- helpers


def concrete(text: str) -> TensorType:
    """The row's type with symbols replaced by DIMS and `...` by LEAD."""
    t = tensor_type(text)
    dims = tuple(d.substitute(DIMS) if isinstance(d, Sym) else d for d in t.shape)
    return TensorType((LEAD if t.variadic else ()) + dims, t.dtype)


def random_tensor(t: TensorType) -> torch.Tensor:
    shape = t.concrete()
    assert shape is not None
    if t.dtype == "float":
        return torch.randn(shape)
    if t.dtype == "bool":
        return torch.rand(shape) > 0.5
    return torch.randint(0, 3, shape, dtype=TORCH_DTYPE[t.dtype])  # valid for Embedding(num>=3)


def run(row: Row, ins: list[torch.Tensor], opt: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    made = build(row.name, *[concrete(s) for s in row.inputs], **row.kw, **{k: concrete(v) for k, v in row.opt.items()})
    if decl(row.name).kind == "function":
        tensors: tuple[Any, ...] = (ins,) if made.pack else tuple(ins)
        out = made.target(*tensors, *made.args, **made.kwargs)
    else:
        assert isinstance(made, torch.nn.Module)
        out = made(*ins, **opt)
    return out if isinstance(out, tuple) else (out,)


def expected_shape(t: TensorType) -> tuple[int | None, ...]:
    """A symbolic output type at the row's sizes; None where the rule does not know."""
    dims = tuple(d.substitute(DIMS) if isinstance(d, Sym) else d for d in t.shape)
    return (LEAD if t.variadic else ()) + tuple(d if isinstance(d, int) else None for d in dims)


# --------------------------------------------------------------------------- the table


def test_every_core_name_is_registered_and_has_rows() -> None:
    registered = load()
    for name in CORE:
        assert name in registered, name
        assert any(r.name == name for r in ROWS), f"no table row for {name}"


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_symbolic_rule(row: Row) -> None:
    outs = infer(row.name, *row.inputs, **row.kw, **row.opt)
    assert len(outs) == len(decl(row.name).outputs)
    if row.expect is not None:
        assert tuple(str(t) for t in outs) == row.expect
    assert all(t.why for t in outs), "every output type says where its shape came from"


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_rule_agrees_with_module(row: Row) -> None:
    torch.manual_seed(0)
    ins = [random_tensor(concrete(s)) for s in row.inputs]
    opt = {k: random_tensor(concrete(v)) for k, v in row.opt.items()}
    outs = run(row, ins, opt)
    symbolic = infer(row.name, *row.inputs, **row.kw, **row.opt)
    exact = infer(row.name, *[concrete(s) for s in row.inputs], **row.kw, **{k: concrete(v) for k, v in row.opt.items()})
    assert len(outs) == len(symbolic) == len(exact)
    for y, sym_t, t in zip(outs, symbolic, exact, strict=True):
        assert t.concrete() == tuple(y.shape), f"rule says {t}, module gives {tuple(y.shape)}"
        assert y.dtype == TORCH_DTYPE[t.dtype] == TORCH_DTYPE[sym_t.dtype]
        want = expected_shape(sym_t)
        assert len(want) == y.dim()
        assert all(w is None or w == g for w, g in zip(want, y.shape, strict=True)), (sym_t, tuple(y.shape))


# --------------------------------------------------------------------------- errors


BAD_SHAPES = [
    # (name, inputs, kw, code, words that the label must contain)
    ("Linear", ("[]",), {"out": 4}, "E0303", "expected [..., F], found []"),
    ("Linear", ("[N, F] long",), {"out": 4}, "E0302", "expected float, found long"),
    ("MLP", ("[N, F] bool",), {"hidden": 4, "out": 2}, "E0302", "found bool"),
    ("Embedding", ("[N]",), {"num": 4, "dim": 2}, "E0302", "expected long or int, found float"),
    ("LayerNorm", ("[] ",), {}, "E0303", "found []"),
    ("BatchNorm", ("[B]",), {}, "E0303", "expected [B, F], [B, C, L] or [B, C, H, W], found [B]"),
    ("BatchNorm", ("[B, F, T, S, U]",), {}, "E0303", "found [B, F, T, S, U]"),
    ("BatchNorm", ("[..., F]",), {}, "E0303", "found [..., F]"),
    ("Dropout", ("[N] long",), {}, "E0302", "found long"),
    ("MultiheadAttention", ("[B, T, 6]",), {"heads": 4}, "E0301", "6 is not divisible by heads=4"),
    ("MultiheadAttention", ("[N, D]",), {"heads": 2}, "E0303", "expected [B, T, D], found [N, D]"),
    ("MultiheadAttention", ("[3, T, 8]",), {"heads": 2, "k": "[4, S, 8]"}, "E0301", "found [4, S, 8]"),
    ("MultiheadAttention", ("[B, T, 8]",), {"heads": 2, "k": "[B, 5, 8]", "v": "[B, 6, 8]"}, "E0301", "found [B, 6, 8]"),
    ("relu", ("[N] long",), {}, "E0302", "expected float, found long"),
    ("softmax", ("[N, F]",), {"dim": 2}, "E0303", "rank 2: dim must be in -2..1"),
    ("log_softmax", ("[N, F] int",), {}, "E0302", "found int"),
    ("cat", ("[N, 3]", "[M, 5]"), {"dim": 0}, "E0301", "found [M, 5], but argument 1 is [N, 3]"),
    ("cat", ("[N, 3]", "[N, 2, 5]"), {}, "E0303", "expected rank 2"),
    ("cat", ("[N, F]", "[N, F]"), {"dim": -3}, "E0303", "dim must be in -2..1"),
    ("cat", ("[...,  F]", "[..., F]"), {"dim": 0}, "E0303", "unknown number of leading dims"),
    ("cat", ("[]", "[]"), {}, "E0303", "found []"),
    ("stack", ("[N, 3]", "[N, 4]"), {}, "E0301", "found [N, 4]"),
    ("stack", ("[N, 3]", "[N, 3]"), {"dim": 3}, "E0303", "dim must be in -3..2"),
    ("mean", ("[N, F] long",), {"dim": 0}, "E0302", "found long"),
    ("mean", ("[N, F]",), {"dim": 2}, "E0303", "rank 2"),
    ("sum", ("[N, F]",), {"dim": [0, -2]}, "E0401", "name one axis twice"),
    ("max", ("[..., F]",), {"dim": 0}, "E0303", "unknown number of leading dims"),
    ("flatten", ("[B, T, F]",), {"start": 2, "end": 1}, "E0401", "start=2 is after end=1"),
    ("flatten", ("[B, T]",), {"end": 2}, "E0303", "rank 2"),
    ("flatten", ("[..., F]",), {"start": 1}, "E0303", "unknown number of leading dims"),
    ("reshape", ("[2, 6]",), {"shape": [5, 2]}, "E0305", "12 elements cannot become 10"),
    ("reshape", ("[2, 6]",), {"shape": [-1, 5]}, "E0305", "12 elements do not split into blocks of 5"),
    ("transpose", ("[B, T]",), {"dim0": 0, "dim1": 2}, "E0303", "dim1 must be in -2..1"),
    ("transpose", ("[..., F]",), {"dim0": 0, "dim1": -1}, "E0303", "unknown number of leading dims"),
]


@pytest.mark.parametrize(("name", "inputs", "kw", "code", "words"), BAD_SHAPES, ids=lambda v: str(v))
def test_bad_shapes_and_dtypes(name: str, inputs: tuple[str, ...], kw: dict[str, Any], code: str, words: str) -> None:
    with pytest.raises(ShapeError) as info:
        infer(name, *inputs, **kw)
    err = info.value
    assert err.code == code, (err.code, err.message, err.label)
    assert words in err.label, err.label
    assert err.arg is not None, "the error points at an argument"


def test_indivisible_heads_has_a_help_line() -> None:
    with pytest.raises(ShapeError) as info:
        infer("MultiheadAttention", "[B, T, 6]", heads=4)
    assert info.value.arg == "q"
    assert info.value.help and "divisors of 6" in info.value.help


def test_reshape_binds_symbols_from_the_element_count() -> None:
    assert str(infer("reshape", "[N, 4]", shape=[8, 2])[0]) == "[8, 2]"
    # N is now known to be 4 in the same environment
    from dsl.language.shapes import DimEnv

    env = DimEnv()
    infer("reshape", "[N, 4]", shape=[8, 2], env=env)
    assert env.resolve(Sym("N")) == 4


def test_reshape_that_divides_only_some_sizes_is_refused() -> None:
    """[N, 3] -> [-1, 2] holds for even N only: a diagnostic, not a failure inside torch."""
    with pytest.raises(ShapeError) as e:
        infer("reshape", "[N, 3]", shape=[-1, 2])
    assert e.value.code == "E0305" and "every size" in e.value.label
    (t,) = infer("reshape", "[N, 4]", shape=[-1, 2])
    assert str(t) == "[2*N, 2]"


def test_flatten_from_zero_absorbs_unknown_leading_dims() -> None:
    (t,) = infer("flatten", "[..., T, F]", end=-2)
    assert not t.variadic and len(t.shape) == 2 and str(t.shape[1]) == "F"


# --------------------------------------------------------------------------- hyperparameters


BAD_PARAMS = [
    ("Linear", {"out": 0}),
    ("MLP", {"hidden": 8}),  # out missing
    ("MLP", {"hidden": 8, "out": 2, "layers": 0}),
    ("MLP", {"hidden": 8, "out": 2, "act": "swish"}),
    ("MLP", {"hidden": 8, "out": 2, "dropout": 1.0}),
    ("MLP", {"hidden": -1, "out": 2}),
    ("MLP", {"hidden": 8, "out": 2, "widht": 3}),
    ("Embedding", {"num": 0, "dim": 4}),
    ("Embedding", {"num": 4, "dim": 4, "padding_idx": 4}),
    ("LayerNorm", {"eps": 0}),
    ("BatchNorm", {"momentum": 1.5}),
    ("Dropout", {"p": -0.1}),
    ("Dropout", {"p": 1.2}),
    ("MultiheadAttention", {}),
    ("MultiheadAttention", {"heads": 0}),
    ("MultiheadAttention", {"heads": 2, "dropout": 1.0}),
    ("relu", {"dim": 1}),
    ("gelu", {"approximate": "erf"}),
    ("elu", {"alpha": 0}),
    ("softmax", {"dim": "last"}),
    ("cat", {"axis": 0}),
    ("mean", {"dim": []}),
    ("sum", {"dim": [1, 1]}),
    ("max", {"keepdim": "maybe"}),
    ("flatten", {"start": "a"}),
    ("reshape", {}),
    ("reshape", {"shape": [-1, -1]}),
    ("reshape", {"shape": [2, -3]}),
    ("transpose", {"dim0": 0}),
]


@pytest.mark.parametrize(("name", "kw"), BAD_PARAMS, ids=lambda v: str(v))
def test_invalid_hyperparameters_are_rejected(name: str, kw: dict[str, Any]) -> None:
    for strict in (False, True):
        with pytest.raises(ValidationError):
            decl(name).params.model_validate(kw, strict=strict)


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_row_hyperparameters_pass_the_checkers_strict_validation(row: Row) -> None:
    # The checker validates with strict=True: values arrive as the spec wrote them (lists, ints).
    decl(row.name).params.model_validate(row.kw, strict=True)


def test_every_param_field_is_documented() -> None:
    for name in CORE:
        for fname, f in decl(name).params.model_fields.items():
            assert f.description, f"{name}.{fname} has no description"


# --------------------------------------------------------------------------- behaviour


def test_mlp_structure() -> None:
    seq = build("MLP", "[4, 6]", hidden=8, out=3, layers=3, act="relu", dropout=0.2)
    kinds = [type(m).__name__ for m in seq]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [m.out_features for m in seq if isinstance(m, torch.nn.Linear)] == [8, 8, 3]
    single = build("MLP", "[4, 6]", hidden=8, out=3, layers=1)
    assert [type(m).__name__ for m in single] == ["Linear"]


def test_mha_defaults_k_to_q_and_v_to_k() -> None:
    torch.manual_seed(0)
    mod = build("MultiheadAttention", "[2, 3, 8]", heads=2).eval()
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(mod(q), mod(q, q, q))
    torch.testing.assert_close(mod(q, k=k), mod(q, k, k))
    ref, _ = mod.attn(q, k, k)
    torch.testing.assert_close(mod(q, k=k), ref)


def test_dropout_is_identity_in_eval_and_drops_in_train() -> None:
    mod = build("Dropout", "[1000]", p=0.5)
    x = torch.ones(1000)
    assert torch.equal(mod.eval()(x), x)
    y = mod.train()(x)
    assert 0 < int((y == 0).sum()) < 1000 and torch.allclose(y[y != 0], torch.full_like(y[y != 0], 2.0))


def test_functions_lower_to_readable_torch_targets() -> None:
    import torch.nn.functional as F

    def target(name: str, *shapes: str, **kw: Any) -> Any:
        return build(name, *shapes, **kw)

    assert target("relu", "[3]").target is torch.relu
    assert target("gelu", "[3]").target is F.gelu and target("gelu", "[3]").kwargs == {}
    assert target("softmax", "[3]").kwargs == {"dim": -1}
    assert target("max", "[3, 2]", dim=0).target is torch.amax
    assert target("cat", "[3]", "[3]").pack and target("cat", "[3]", "[3]").target is torch.cat


def test_reductions_and_softmax_match_torch_numerically() -> None:
    x = torch.randn(3, 4, 5)
    low = build("mean", "[3, 4, 5]", dim=[0, 2], keepdim=True)
    torch.testing.assert_close(low.target(x, **low.kwargs), x.mean(dim=(0, 2), keepdim=True))
    low = build("max", "[3, 4, 5]", dim=1)
    torch.testing.assert_close(low.target(x, **low.kwargs), x.max(dim=1).values)
    low = build("log_softmax", "[3, 4, 5]", dim=0)
    torch.testing.assert_close(low.target(x, **low.kwargs), torch.log_softmax(x, 0))


def test_declaring_blocks_does_not_import_torch() -> None:
    code = "import dsl.language.registry as r; r.load(); import sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cat_of_nothing_is_an_arity_error() -> None:
    with pytest.raises(ShapeError) as info:
        infer("cat")
    assert info.value.code == "E0202"


# --------------------------------------------------------------------------- properties: rule <=> torch

SHAPES = st.lists(st.integers(1, 4), min_size=0, max_size=4).map(tuple)
DIM = st.integers(-5, 4)


def _agree(name: str, shapes: list[tuple[int, ...]], kw: dict[str, Any]) -> None:
    """The shape rule accepts exactly what torch accepts, and predicts its output shape."""
    types = ["[" + ", ".join(map(str, s)) + "]" for s in shapes]
    try:
        (t,) = infer(name, *types, **kw)
    except ShapeError:
        t = None
    low = build(name, *types, **kw) if t is not None else None
    tensors = [torch.randn(s) for s in shapes]
    try:
        fn_kw = dict(low.kwargs) if low else {}
        target = low.target if low else None
        if target is None:  # the rule refused: torch must refuse the same call too
            _torch_equivalent(name, tensors, kw)
            raise AssertionError(f"rule refused {name}{types} {kw}, torch accepted it")
        y = target(tensors, *low.args, **fn_kw) if low.pack else target(*tensors, *low.args, **fn_kw)
    except (RuntimeError, IndexError, ValueError) as exc:
        assert t is None, f"rule said {t} for {name}{types} {kw}, torch raised {exc}"
        return
    assert t is not None and t.concrete() == tuple(y.shape), (name, types, kw, t, y.shape)


def _torch_equivalent(name: str, tensors: list[torch.Tensor], kw: dict[str, Any]) -> None:
    calls = {
        "cat": lambda: torch.cat(tensors, dim=kw.get("dim", -1)),
        "stack": lambda: torch.stack(tensors, dim=kw.get("dim", 0)),
        "softmax": lambda: torch.softmax(tensors[0], dim=kw.get("dim", -1)),
        "sum": lambda: torch.sum(tensors[0], dim=kw.get("dim"), keepdim=kw.get("keepdim", False)),
        "flatten": lambda: torch.flatten(tensors[0], kw.get("start", 0), kw.get("end", -1)),
        "transpose": lambda: torch.transpose(tensors[0], kw["dim0"], kw["dim1"]),
        "reshape": lambda: torch.reshape(tensors[0], kw["shape"]),
    }
    calls[name]()


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, dim=DIM)
def test_softmax_agrees_with_torch(shape: tuple[int, ...], dim: int) -> None:
    _agree("softmax", [shape], {"dim": dim})


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, dims=st.lists(DIM, min_size=1, max_size=2, unique=True), keepdim=st.booleans())
def test_sum_agrees_with_torch(shape: tuple[int, ...], dims: list[int], keepdim: bool) -> None:
    _agree("sum", [shape], {"dim": dims, "keepdim": keepdim})


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, start=DIM, end=DIM)
def test_flatten_agrees_with_torch(shape: tuple[int, ...], start: int, end: int) -> None:
    _agree("flatten", [shape], {"start": start, "end": end})


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, dim0=DIM, dim1=DIM)
def test_transpose_agrees_with_torch(shape: tuple[int, ...], dim0: int, dim1: int) -> None:
    _agree("transpose", [shape], {"dim0": dim0, "dim1": dim1})


@settings(max_examples=60, deadline=None)
@given(shape=SHAPES, new=st.lists(st.integers(1, 6), min_size=1, max_size=3), hole=st.integers(-1, 2))
def test_reshape_agrees_with_torch(shape: tuple[int, ...], new: list[int], hole: int) -> None:
    if 0 <= hole < len(new):
        new[hole] = -1
    _agree("reshape", [shape], {"shape": new})


@settings(max_examples=60, deadline=None)
@given(a=SHAPES, b=SHAPES, dim=DIM, stack=st.booleans())
def test_cat_and_stack_agree_with_torch(a: tuple[int, ...], b: tuple[int, ...], dim: int, stack: bool) -> None:
    if stack and len(a) == len(b):
        b = a  # same-shaped inputs, so stack is mostly valid
    _agree("stack" if stack else "cat", [a, b], {"dim": dim})


def test_attention_module_exports() -> None:
    # DESIGN §8 "it compiles": the one custom module here must survive torch.export.
    torch.manual_seed(0)
    mod = build("MultiheadAttention", "[2, 3, 8]", heads=2).eval()
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    exported = torch.export.export(mod, (q,), {"k": k})
    torch.testing.assert_close(exported.module()(q, k=k), mod(q, k=k))
