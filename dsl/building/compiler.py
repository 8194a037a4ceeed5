"""Build: turn a checked :class:`~dsl.checking.program.Program` into a ``torch.fx.GraphModule``.

The graph is written node by node (no tracing): node names follow the spec's
names, ``node.meta`` keeps the span and the symbolic type, and ``model.code`` is
plain readable PyTorch. The result has no interpreter: calling it runs the
generated ``forward`` directly. With guards on, the first statement of that
``forward`` checks the inputs against the spec (:mod:`dsl.building.guards`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx, nn

from dsl.building.guards import GUARD_ATTRIBUTE, Tracer, check_inputs
from dsl.checking.program import ModuleSpec, PNode, Program, Ref, arg_refs
from dsl.checking.values import DeclValue, UserBlockValue
from dsl.language.diagnostics import Diagnostic
from dsl.language.errors import DslError, SpecError
from dsl.language.registry import BlockValue, BuildCall, BuildError
from dsl.language.shapes import Sym, TensorType

BINOPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "@": operator.matmul,
          "//": operator.floordiv, "%": operator.mod, "**": operator.pow, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
          "!=": operator.ne}


class BuildFailure(DslError):
    def __init__(self, diags: list[Diagnostic]):
        super().__init__("build failed")
        self.diags = diags


def instantiate(value: BlockValue, inputs: Sequence[TensorType]) -> nn.Module:
    """A new module (its own weights) for a block value called on tensors of ``inputs``' types."""
    if isinstance(value, DeclValue):
        assert value.decl.build is not None
        return value.decl.build(value.build_call(inputs, instantiate), value.params)
    if isinstance(value, UserBlockValue):
        return build_program(value.program(inputs), outputs_as_tuple=True)
    return value.build(inputs)  # a value of another kind (a plugin's) builds itself


def build_module(prog: Program, key: str, spec: ModuleSpec, diags: list[Diagnostic]) -> nn.Module | nn.Parameter | None:
    """The torch module of one submodule of ``prog``; a diagnostic (and None) when it cannot be built."""
    try:
        if spec.kind == "decl":
            assert spec.decl is not None and spec.decl.build is not None
            ins = {k: prog.env.resolve_type(t) for k, t in spec.in_types.items()}
            outs = [prog.env.resolve_type(t) for t in spec.out_types]
            module = spec.decl.build(BuildCall(spec.decl.name, ins, outs, instantiate), spec.params)
        elif spec.kind == "value":
            assert spec.value is not None
            module = instantiate(spec.value, [prog.env.resolve_type(t) for t in spec.in_types.values()])
        else:
            assert spec.program is not None
            module = build_program(spec.program, outputs_as_tuple=True)
    except BuildError as e:
        diags.append(Diagnostic(e.code, e.message, spec.span, help=e.help))
        return None
    except BuildFailure as e:
        diags.extend(e.diags)
        return None
    except SpecError as e:
        diags.extend(e.diagnostics)
        return None
    except Exception as e:  # a faulty builder is reported at the call, never as a traceback
        name = spec.decl.name if spec.decl is not None else key
        diags.append(Diagnostic("E0602", f"building `{name}` failed: {type(e).__name__}: {e}", spec.span))
        return None
    if not isinstance(module, nn.Module | nn.Parameter):
        diags.append(Diagnostic("E0602", f"builder of `{key}` returned {type(module).__name__}, not a torch module",
                                spec.span))
        return None
    return module


def build_modules(prog: Program) -> nn.Module:
    """A module holding every submodule of ``prog`` under its name; BuildFailure if any cannot be built.

    A block whose builder gives an ``nn.Parameter`` (``Parameter([T, D])``) is a learned tensor:
    it becomes a parameter of the model itself, named after its statement."""
    diags: list[Diagnostic] = []
    root = nn.Module()
    for key, spec in prog.modules.items():
        m = build_module(prog, key, spec, diags)
        if isinstance(m, nn.Parameter):
            root.register_parameter(key, m)
        elif m is not None:
            root.add_module(key, m)
    if diags:
        raise BuildFailure(diags)
    for key, spec in prog.modules.items():  # shared weights: Linear(h, out=V, tie=emb)
        if spec.tie is not None:
            root.get_submodule(key).weight = root.get_submodule(spec.tie).weight
    return root


def build_program(
    prog: Program,
    return_dict: bool = False,
    with_aux: bool = False,
    outputs_as_tuple: bool = False,
    guard: Any = None,
    expose: dict[str, Ref] | None = None,
) -> fx.GraphModule:
    """Compile ``prog``; raise BuildFailure with diagnostics when a size is unknown.

    ``guard``: checks the inputs as the first statement of ``forward``.
    ``expose``: values the spec binds but does not output, returned too (the trainer's).
    """
    root = build_modules(prog)
    graph = fx.Graph(tracer_cls=Tracer)  # the tracer an unpickled copy is rebuilt with (keeps the guard)
    env: dict[str, Any] = {}  # node name -> fx node (or tuple of output fx nodes)
    placeholders = []
    sizes = Sizes(graph, prog, env)
    for node in prog.nodes:
        env[node.name] = emit(graph, node, env, prog, sizes)
        if node.kind == "input":
            placeholders.append(env[node.name])
    if guard is not None:
        setattr(root, GUARD_ATTRIBUTE, guard)
        _insert_guard(graph, placeholders, _float_weight(root))
    outputs = {name: fetch(env, ref) for name, ref in prog.outputs.items()}
    if outputs_as_tuple:
        values = list(outputs.values())
        result: Any = values[0] if len(values) == 1 else tuple(values)
    else:
        for name, ref in (expose or {}).items():
            outputs.setdefault(name, fetch(env, ref))
        if with_aux:
            for a in prog.aux:
                outputs[a.key] = fetch(env, a.ref)
        if len(outputs) == 1 and not return_dict and not with_aux:
            result = next(iter(outputs.values()))
        else:
            result = outputs
    graph.output(result)
    graph.lint()
    gm = fx.GraphModule(root, graph, class_name=prog.name)
    preserve_attribute(gm, "dsl_inputs", prog.input_types())
    preserve_attribute(gm, "dsl_outputs", prog.output_types())
    preserve_attribute(gm, "dsl_aux_weights", {a.key: a.weight for a in prog.aux} if with_aux else {})
    return gm


def _insert_guard(graph: fx.Graph, placeholders: list[fx.Node], weight: str | None) -> None:
    """``check_inputs(self.dsl_guard, self.<weight>, x, ...)`` right after the placeholders.

    ``weight``: a floating parameter, whose dtype and device float inputs must share."""
    with graph.inserting_after(placeholders[-1]) if placeholders else graph.inserting_before(None):
        g = graph.get_attr(GUARD_ATTRIBUTE)
    with graph.inserting_after(g):
        w = graph.get_attr(weight) if weight is not None else None
    with graph.inserting_after(w if w is not None else g):
        graph.create_node("call_function", check_inputs, (g, w, *placeholders), name="check_inputs")


def _float_weight(root: nn.Module) -> str | None:
    return next((name for name, p in root.named_parameters() if p.is_floating_point()), None)


def preserve_attribute(gm: fx.GraphModule, name: str, value: Any) -> None:
    """Set ``gm.name`` so that ``copy.deepcopy(gm)`` keeps it too.

    GraphModule's deepcopy rebuilds the module from its graph and drops plain
    attributes; a copied model would silently lose its aux-loss weights. fx
    re-applies what ``meta["_user_preserved_attributes"]`` holds.
    """
    setattr(gm, name, value)
    key = getattr(fx.graph_module, "_USER_PRESERVED_ATTRIBUTES_KEY", "_user_preserved_attributes")
    gm.meta.setdefault(key, {})[name] = value


def fetch(env: dict[str, Any], ref: Ref) -> Any:
    v = env[ref.node]
    if isinstance(v, tuple):
        return v[ref.index]
    return v


def _arg(env: dict[str, Any], a: Any) -> Any:
    if isinstance(a, Ref):
        return fetch(env, a)
    if isinstance(a, list):
        return [_arg(env, x) for x in a]
    return a


def _meta(fx_node: fx.Node, node: PNode, prog: Program, index: int = 0) -> None:
    fx_node.meta["span"] = node.span
    if node.types:
        fx_node.meta["dsl_type"] = str(prog.env.resolve_type(node.types[min(index, len(node.types) - 1)]))


class Sizes:
    """Sizes as values in the generated code: a symbolic dim reads its input's size at run
    time (``tokens.size(1)``), so torch.compile and torch.export keep it dynamic; a size
    no input carries is its known number, and unknown otherwise (E0601)."""

    def __init__(self, graph: fx.Graph, prog: Program, env: dict[str, Any]):
        self.graph, self.prog, self.env = graph, prog, env
        self.read: dict[str, fx.Node] = {}  # symbol root -> its size node

    def device(self) -> Any:
        """The device of the program's first input (where tensors made inside the model go), or None."""
        if "device" not in self.read:
            first = next(iter(self.prog.inputs.values()), None)
            self.read["device"] = (self.graph.call_function(getattr, (self.env[first.node], "device"))
                                   if first is not None else None)
        return self.read["device"]

    def value(self, v: Any) -> Any:
        """``v`` with every size in it (in lists, tuples and slices too) made a graph value."""
        if isinstance(v, Sym):
            return self.dim(v)
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, tuple):
            return tuple(self.value(x) for x in v)
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, slice):
            return slice(self.value(v.start), self.value(v.stop), self.value(v.step))
        return v

    def dim(self, d: Sym) -> Any:
        total: Any = 0
        for mono, coeff in d.terms.items():
            term: Any = coeff
            for symbol in mono:
                term = self._mul(term, self.symbol(symbol))
            total = self._add(total, term)
        return total

    def symbol(self, name: str) -> Any:
        env = self.prog.env
        root = env.find(name)
        if root in self.read:
            return self.read[root]
        source = next((s for s in self.prog.sizes if env.find(s.symbol) == root), None)
        if source is None:
            known = env.resolve(Sym(name))
            if isinstance(known, int):
                return known
            raise BuildError(f"the size {name} is unknown when building: no input carries it", help=f"give --dim {name}=...")
        node = self.graph.call_method("size", (self.env[source.node], source.axis))
        self.read[root] = node
        return node

    def _mul(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            return a * b
        if isinstance(a, int) and a == 1:
            return b
        return self.graph.call_function(operator.mul, (a, b))

    def _add(self, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            return a + b
        if isinstance(a, int) and a == 0:
            return b
        return self.graph.call_function(operator.add, (a, b))


def emit(graph: fx.Graph, node: PNode, env: dict[str, Any], prog: Program, sizes: Sizes | None = None) -> Any:
    """The fx node(s) of one program node; a tuple of getitem nodes for several outputs."""
    if node.kind == "input":
        n = graph.create_node("placeholder", node.op, name=node.name)
        _meta(n, node, prog)
        return n
    sizes = sizes or Sizes(graph, prog, env)
    args = tuple(_arg(env, a) for a in node.args)
    kwargs = {k: _arg(env, v) for k, v in node.kwargs.items()}
    if node.kind == "block" and not args and not kwargs and node.decl is not None and not node.decl.inputs:
        n = graph.create_node("get_attr", node.module, name=node.name)  # a learned tensor (Parameter)
    elif node.kind in ("block", "user"):
        n = graph.create_node("call_module", node.module, args, kwargs, name=node.name)
    elif node.kind == "function":
        lowered = lower(node, prog)
        targs = args
        if lowered.keywords:
            names = [a.name for a in node.decl.inputs if not a.optional]  # type: ignore[union-attr]
            kwargs = {**kwargs, **{n: a for n, a in zip(names, args, strict=False) if n in lowered.keywords}}
            targs = tuple(a for n, a in zip(names, args, strict=False) if n not in lowered.keywords)
        if lowered.pack:
            flat = [x for a in args for x in (a if isinstance(a, list) else [a])]
            targs = (flat,)
        extra = sizes.value(dict(lowered.kwargs))
        if lowered.device:
            extra["device"] = sizes.device()
        n = graph.create_node("call_function", lowered.target, targs + tuple(sizes.value(list(lowered.args))),
                              {**kwargs, **extra}, name=node.name)
    elif node.kind == "index":
        n = graph.create_node("call_function", operator.getitem, (args[0], sizes.value(node.key)), name=node.name)
    elif node.kind == "binop":
        operands = tuple(sizes.value(a) for a in args)  # `x * B`: a size read from the inputs
        n = graph.create_node("call_function", BINOPS[node.op], operands, name=node.name)
    elif node.kind == "unary":
        n = graph.create_node("call_function", operator.neg, args, name=node.name)
    else:  # pragma: no cover - the checker creates no other kinds
        raise ValueError(node.kind)
    _meta(n, node, prog)
    if len(node.types) > 1:
        outs = []
        for i in range(len(node.types)):
            g = graph.create_node("call_function", operator.getitem, (n, i), name=f"{node.name}_{i}")
            _meta(g, node, prog, i)
            outs.append(g)
        return tuple(outs)
    return n


def lower(node: PNode, prog: Program) -> Any:
    """How a function node becomes a call: its declaration's lowering on the node's types."""
    decl = node.decl
    assert decl is not None and decl.lower is not None
    ins: dict[str, TensorType] = {}
    refs = arg_refs(node.args)
    if decl.inputs and decl.inputs[0].variadic:
        for i, r in enumerate(refs):
            ins[f"{decl.inputs[0].name}{i}"] = prog.type_of(r)
    else:
        names = [a.name for a in decl.inputs if not a.optional]
        for n, r in zip(names, refs, strict=False):
            ins[n] = prog.type_of(r)
        for k, r in node.kwargs.items():
            ins[k] = prog.type_of(r)
    outs = [prog.env.resolve_type(t) for t in node.types]
    return decl.lower(BuildCall(decl.name, ins, outs, instantiate), node.params)


def count_parameters(module: nn.Module) -> int:
    """Parameters of ``module``, each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


__all__ = ["BuildFailure", "build_program", "count_parameters", "instantiate", "torch"]
