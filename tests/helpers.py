"""Shared test helpers: run a block's shape rule or builder on types written as
text (``"[N, 16]"``, ``"[2, E] long"``, ``"[..., 8]"``), and build the CLI's
argument namespaces, and the small data sets and specs that several test files share."""

from __future__ import annotations

from typing import Any

from dsl.building.compiler import instantiate
from dsl.checking.values import DeclValue
from dsl.language.registry import BuildCall, Decl, lookup
from dsl.language.shapes import DimEnv, ShapeCall, Sym, TensorType


def tensor_type(text: str | TensorType) -> TensorType:
    """Parse ``"[N, 16] long"`` into a TensorType (symbols upper-case, ``_``, ``...``)."""
    if isinstance(text, TensorType):
        return text
    body, _, dtype = text.strip().partition("]")
    dims: list[Any] = []
    variadic = False
    for tok in body.strip().lstrip("[").replace(",", " ").split():
        if tok == "...":
            variadic = True
        elif tok == "_":
            dims.append(None)
        elif tok.lstrip("-").isdigit():
            dims.append(int(tok))
        else:
            dims.append(Sym(tok))
    return TensorType(tuple(dims), dtype.strip() or "float", variadic)


def decl(name: str) -> Decl:
    d = lookup(name)
    if d is None:
        raise KeyError(name)
    return d


def params(name: str, **kw: Any) -> Any:
    return decl(name).params.model_validate(kw)


def value(name: str, **kw: Any) -> DeclValue:
    """A block value of a registered block, as ``expert=MLP(...)`` gives."""
    return DeclValue(decl(name), params(name, **kw))


def _named(d: Decl, shapes: tuple, optional: dict[str, Any]) -> dict[str, TensorType]:
    names = [a.name for a in d.inputs]
    ins: dict[str, TensorType] = {}
    if d.inputs and d.inputs[0].variadic:
        for i, s in enumerate(shapes):
            ins[f"{d.inputs[0].name}{i}"] = tensor_type(s)
    else:
        for n, s in zip(names, shapes):
            ins[n] = tensor_type(s)
    for k, v in optional.items():
        ins[k] = tensor_type(v)
    return ins


def _split(d: Decl, kw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    tensor_names = {a.name for a in d.inputs}
    opt = {k: v for k, v in kw.items() if k in tensor_names}
    hyper = {k: v for k, v in kw.items() if k not in tensor_names}
    return opt, hyper


def infer(name: str, *shapes: str | TensorType, env: DimEnv | None = None, **kw: Any) -> list[TensorType]:
    """Run ``name``'s shape rule; tensor keywords (``stored=...``) are optional inputs."""
    d = decl(name)
    opt, hyper = _split(d, kw)
    call = ShapeCall(name, _named(d, shapes, opt), env or DimEnv())
    outs = d.infer(call, d.params.model_validate(hyper))
    return [call.env.resolve_type(t) for t in outs]


def build(name: str, *shapes: str | TensorType, **kw: Any) -> Any:
    """Build ``name``'s torch module for concrete input types."""
    d = decl(name)
    opt, hyper = _split(d, kw)
    p = d.params.model_validate(hyper)
    ins = _named(d, shapes, opt)
    outs = d.infer(ShapeCall(name, ins, DimEnv()), p)
    call = BuildCall(name, ins, outs, instantiate)
    if d.kind == "function":
        assert d.lower is not None
        return d.lower(call, p)
    assert d.build is not None
    return d.build(call, p)


def command_args(command: str = "train", **values: Any) -> Any:
    """The ``argparse.Namespace`` the real CLI builds for ``dsl COMMAND``, with
    ``values`` set on it (``file=...``, ``out=...``); ``quiet`` defaults to True.

    Tests call the command functions directly (no subprocess, no torch start-up)
    with every option at its real default, so a new CLI flag never needs
    updating in each test's hand-written namespace.
    """
    from dsl.cli.main import build_parser

    required = {"eval": ["--ckpt", "-"], "predict": ["--ckpt", "-", "--data", "-", "--out", "-"]}
    args = build_parser().parse_args([command, "spec.dsl", *required.get(command, [])])
    if hasattr(args, "quiet"):
        args.quiet = True
    for key, value in values.items():
        setattr(args, key, value)
    return args


def prepared(spec: Any, **overrides: Any) -> Any:
    """A spec (a path, or text) checked for training, as `dsl train` prepares it."""
    import dsl
    from dsl.training.session import prepare

    train_overrides = {k: overrides.pop(k) for k in ("epochs", "seed") if k in overrides}
    if isinstance(spec, str) and "\n" in spec:
        spec = dsl.loads(spec, file="spec.dsl")
    return prepare(spec, overrides, train_overrides=train_overrides)


def trainer_for(spec: Any, model: Any = None, step: Any = None, **overrides: Any) -> Any:
    """A Trainer for ``spec`` (no run directory), as `dsl train` builds it; ``model`` and
    ``step`` replace the compiled ones (a hand-written model needs its own step)."""
    import torch

    from dsl.building.model import build_for_training
    from dsl.training.session import load_data
    from dsl.training.trainer import Trainer

    p = prepared(spec, **overrides)
    torch.manual_seed(p.cfg.seed)
    if model is None:
        model, step = build_for_training(p.analysis)
    return Trainer(model, step, p.cfg, p.analysis.objective.metrics, load_data(p.cfg), verbose=False)


# --------------------------------------------------------------------------- shared data and specs


def graph_list(count: int = 10, seed: int = 0) -> list:
    """``count`` small ring graphs (3–6 nodes, 5 node features, 3 edge features, label ``i % 2``)."""
    import torch
    from torch_geometric.data import Data

    g = torch.Generator().manual_seed(seed)
    graphs = []
    for i in range(count):
        n = 3 + i % 4
        src = torch.arange(n)
        ring = torch.stack([torch.cat([src, (src + 1) % n]), torch.cat([(src + 1) % n, src])])
        graphs.append(Data(x=torch.randn(n, 5, generator=g), edge_index=ring,
                           edge_attr=torch.randn(2 * n, 3, generator=g), y=torch.tensor([i % 2]),
                           w=torch.randn(n, generator=g), name=f"g{i}"))
    return graphs


def graph_classifier_spec(source: str, batch: int) -> str:
    """A GAT graph classifier trained one epoch on the graph list file ``source``."""
    return f"""
model G(classes: int = 2) {{
    input x: [N, F]
    input edge_index: [2, E] long
    input batch: [N] long
    h = relu(GAT(x, edge_index, out=8))
    logits = Linear(global_mean_pool(h, batch), out=classes)
    output logits: [G, classes]
}}
train {{
    data    = graphs("{source}", batch={batch})
    loss    = cross_entropy(logits, y)
    metrics = [accuracy(logits, y)]
    epochs  = 1
}}
"""
