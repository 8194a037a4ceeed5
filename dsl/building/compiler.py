"""Build: turn a checked :class:`~dsl.checking.program.Program` into a ``torch.fx.GraphModule``.

The graph is written node by node (no tracing): node names follow the spec's
names, ``node.meta`` keeps the span and the symbolic type, and ``model.code`` is
plain readable PyTorch. The result has no interpreter: calling it runs the
generated ``forward`` directly.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

from dsl.checking.program import ModuleSpec, PNode, Program, Ref, arg_refs
from dsl.language.diagnostics import Diagnostic, SpecError
from dsl.language.registry import BuildCall, BuildError
from dsl.language.shapes import TensorType

_BINOPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "@": operator.matmul}


class BuildFailure(Exception):
    def __init__(self, diags: list[Diagnostic]):
        super().__init__("build failed")
        self.diags = diags


def _resolved(prog: Program, t: TensorType) -> TensorType:
    return prog.env.resolve_type(t)


def build_module(prog: Program, key: str, spec: ModuleSpec, diags: list[Diagnostic]) -> nn.Module | None:
    try:
        if spec.kind == "decl":
            assert spec.decl is not None and spec.decl.build is not None
            ins = {k: _resolved(prog, t) for k, t in spec.in_types.items()}
            outs = [_resolved(prog, t) for t in spec.out_types]
            module = spec.decl.build(BuildCall(spec.decl.name, ins, outs), spec.params)
        elif spec.kind == "value":
            assert spec.value is not None
            module = spec.value.build([_resolved(prog, t) for t in spec.in_types.values()])
        else:
            assert spec.program is not None
            module = build_program(spec.program, return_dict=False, outputs_as_tuple=True)
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
    if not isinstance(module, nn.Module):
        diags.append(Diagnostic("E0602", f"builder of `{key}` returned {type(module).__name__}, not a torch module", spec.span))
        return None
    return module


def build_program(
    prog: Program,
    return_dict: bool = False,
    with_aux: bool = False,
    outputs_as_tuple: bool = False,
) -> fx.GraphModule:
    """Compile ``prog``; raise BuildFailure with diagnostics when a size is unknown."""
    diags: list[Diagnostic] = []
    root = nn.Module()
    for key, spec in prog.modules.items():
        m = build_module(prog, key, spec, diags)
        if m is not None:
            root.add_module(key, m)
    if diags:
        raise BuildFailure(diags)

    graph = fx.Graph()
    env: dict[str, Any] = {}  # node name -> fx node (or tuple of output fx nodes)
    for node in prog.nodes:
        env[node.name] = _emit(graph, node, env, prog)
    outputs = {name: _fetch(env, ref) for name, ref in prog.outputs.items()}
    if outputs_as_tuple:
        values = list(outputs.values())
        result: Any = values[0] if len(values) == 1 else tuple(values)
    else:
        if with_aux:
            for a in prog.aux:
                outputs[a.key] = _fetch(env, a.ref)
        if len(outputs) == 1 and not return_dict and not with_aux:
            result = next(iter(outputs.values()))
        else:
            result = outputs
    graph.output(result)
    graph.lint()
    gm = fx.GraphModule(root, graph, class_name=prog.name)
    specialise_class(gm)
    # A deep copy or an unpickled copy is a new GraphModule with a class of its own.
    gm._register_deepcopy_hook(specialise_class)
    preserve_attribute(gm, "dsl_inputs", prog.input_types())
    preserve_attribute(gm, "dsl_outputs", prog.output_types())
    preserve_attribute(gm, "dsl_aux_weights", {a.key: a.weight for a in prog.aux} if with_aux else {})
    return gm


class ChildAccessor:
    """``module.<name>`` for a child module, read from ``_modules`` without ``__getattr__``.

    The generated ``forward`` fetches each block with ``self.<name>``. A child module
    is not an instance attribute, so on Python 3.11 every such read first fails the
    normal lookup (which builds and discards an ``AttributeError``) and then runs
    ``nn.Module.__getattr__``: about 0.65 µs, against 0.1 µs through this descriptor,
    a percent of a training step of a small model per block. Set on the class that fx
    makes for each GraphModule, so it affects that one module.

    It behaves as ``nn.Module`` does when the child is replaced (``setattr`` and
    ``add_module`` write ``_modules``, which this reads), set to ``None``, deleted, or
    when a parameter, buffer or plain attribute takes the name afterwards (this falls
    back to the instance dict, then to ``nn.Module.__getattr__``).
    """

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        modules = obj.__dict__.get("_modules")
        if modules is not None and self.name in modules:
            return modules[self.name]
        if self.name in obj.__dict__:
            return obj.__dict__[self.name]
        return nn.Module.__getattr__(obj, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        # Reached only through nn.Module.__setattr__'s plain-attribute branch
        # (modules, parameters and buffers never get here).
        obj.__dict__[self.name] = value

    def __delete__(self, obj: Any) -> None:
        if self.name not in obj.__dict__:
            raise AttributeError(f"'{type(obj).__name__}' object has no attribute '{self.name}'")
        del obj.__dict__[self.name]


def specialise_class(gm: fx.GraphModule) -> None:
    """Set up the class that fx makes for each GraphModule (so it affects ``gm`` only):

    * a :class:`ChildAccessor` for each child module's name that the class does not
      already define (``forward``, ``eval``, ... stay methods);
    * a ``__reduce__`` that runs ``gm``'s deep-copy hooks on the unpickled module, as
      ``copy.deepcopy`` does: fx rebuilds a pickled GraphModule from its code and keeps
      only the attributes its new class lacks, which would drop these accessors and the
      runtime guard's call wrapper (:mod:`dsl.building.guards`).
    """
    cls = type(gm)
    if "_wrapped_call" not in vars(cls):  # not the class fx made for this one module
        return
    for name in gm._modules:
        if name.isidentifier() and not hasattr(cls, name):
            setattr(cls, name, ChildAccessor(name))
    cls.__reduce__ = _reduce_keeping_hooks


def _reduce_keeping_hooks(gm: fx.GraphModule) -> tuple[Any, ...]:
    rebuild, args = fx.GraphModule.__reduce__(gm)
    return _rebuild_with_hooks, (rebuild, args)


def _rebuild_with_hooks(rebuild: Any, args: tuple[Any, ...]) -> fx.GraphModule:
    """fx's rebuild of a pickled GraphModule, then its deep-copy hooks (see :func:`specialise_class`)."""
    gm = rebuild(*args)
    hooks = list(args[0].get("_deepcopy_hooks", ()))
    gm._deepcopy_hooks = hooks
    for hook in hooks:
        hook(gm)
    return gm


def preserve_attribute(gm: fx.GraphModule, name: str, value: Any) -> None:
    """Set ``gm.name`` so that ``copy.deepcopy(gm)`` keeps it too.

    GraphModule's deepcopy rebuilds the module from its graph and drops plain
    attributes; a copied model would silently lose its aux-loss weights. fx
    re-applies what ``meta["_user_preserved_attributes"]`` holds.
    """
    setattr(gm, name, value)
    key = getattr(fx.graph_module, "_USER_PRESERVED_ATTRIBUTES_KEY", "_user_preserved_attributes")
    gm.meta.setdefault(key, {})[name] = value


def _fetch(env: dict[str, Any], ref: Ref) -> Any:
    v = env[ref.node]
    if isinstance(v, tuple):
        return v[ref.index]
    return v


def _arg(env: dict[str, Any], a: Any) -> Any:
    if isinstance(a, Ref):
        return _fetch(env, a)
    if isinstance(a, list):
        return [_arg(env, x) for x in a]
    return a


def _meta(fx_node: fx.Node, node: PNode, prog: Program, index: int = 0) -> None:
    fx_node.meta["span"] = node.span
    if node.types:
        fx_node.meta["dsl_type"] = str(prog.env.resolve_type(node.types[min(index, len(node.types) - 1)]))


def _emit(graph: fx.Graph, node: PNode, env: dict[str, Any], prog: Program) -> Any:
    if node.kind == "input":
        n = graph.create_node("placeholder", node.op, name=node.name)
        _meta(n, node, prog)
        return n
    args = tuple(_arg(env, a) for a in node.args)
    kwargs = {k: _arg(env, v) for k, v in node.kwargs.items()}
    if node.kind in ("block", "user"):
        n = graph.create_node("call_module", node.module, args, kwargs, name=node.name)
    elif node.kind == "function":
        assert node.decl is not None and node.decl.lower is not None
        lowered = _lower(node, prog)
        targs = args
        if lowered.pack:
            flat = [x for a in args for x in (a if isinstance(a, list) else [a])]
            targs = (flat,)
        n = graph.create_node("call_function", lowered.target, targs + tuple(lowered.args), {**kwargs, **lowered.kwargs}, name=node.name)
    elif node.kind == "binop":
        n = graph.create_node("call_function", _BINOPS[node.op], args, name=node.name)
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


def _lower(node: PNode, prog: Program):
    decl = node.decl
    assert decl is not None and decl.lower is not None
    ins: dict[str, TensorType] = {}
    refs = arg_refs(node.args)
    if decl.inputs and decl.inputs[0].variadic:
        for i, r in enumerate(refs):
            ins[f"{decl.inputs[0].name}{i}"] = prog.type_of(r)
    else:
        names = [a.name for a in decl.inputs if not a.optional]
        for n, r in zip(names, refs):
            ins[n] = prog.type_of(r)
        for k, r in node.kwargs.items():
            ins[k] = prog.type_of(r)
    return decl.lower(BuildCall(decl.name, ins, [prog.env.resolve_type(t) for t in node.types]), node.params)


def count_parameters(module: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


__all__ = ["build_program", "BuildFailure", "count_parameters", "torch"]
