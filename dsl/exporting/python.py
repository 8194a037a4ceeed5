"""`dsl compile --emit python`: a compiled model as one standalone, readable PyTorch file.

The file imports torch (and the libraries the model's blocks use, such as
torch_geometric for graph attention), never ``dsl``:

* the model is a ``class <Model>(nn.Module)``; its ``__init__`` builds the same
  submodules under the same attribute names as the compiled module, so
  ``load_state_dict(compiled.state_dict())`` works key for key;
* each user ``block`` becomes its own ``nn.Module`` class (one class per distinct
  body: two calls with equal sizes share it);
* ``forward`` is printed from the fx graph, one line per spec node, named after
  the spec's names, with the node's shape as a comment;
* a research block's module whose class lives in ``dsl`` (``dsl.blocks.nn``) is
  inlined: the class's source plus the helpers, constants and imports it uses,
  nothing else; torch modules are written as ``nn.X(...)``; classes and
  functions from other packages are imported from them.

How constructor arguments are known: the model is built a second time while the
``__init__`` of every module class it contains is wrapped to record its
arguments (:func:`_recording_constructors`); the file then calls each
constructor with exactly the arguments the builder passed. Nothing is pickled
and nothing from the spec is evaluated: every name from the spec that reaches
the file is checked to be a Python identifier (not a keyword), and every value
is written with ``repr`` of a plain constant, so a hostile spec cannot inject code.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import keyword
import math
import operator
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from dsl.blocks.nn.tensors import MADE_BY
from dsl.checking.program import Program
from dsl.exporting.formats import ExportError

_RECORD = "_dsl_export_init"  # instance attribute holding a module's constructor (args, kwargs)
_WIDTH = 96  # line width the generated code aims for
_INFIX = {operator.add: "+", operator.sub: "-", operator.mul: "*", operator.truediv: "/", operator.matmul: "@",
          operator.floordiv: "//", operator.mod: "%", operator.pow: "**", operator.lt: "<", operator.le: "<=",
          operator.gt: ">", operator.ge: ">=", operator.eq: "==", operator.ne: "!="}


# --------------------------------------------------------------------------- identifiers and text


def check_identifier(name: object, what: str) -> str:
    """``name`` if it is a Python identifier that is not a keyword; an ExportError otherwise.

    Every name from the (untrusted) spec passes through here before it is written."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ExportError(
            f"{what} {name!r} is not a Python identifier, so it cannot appear in generated code",
            help="rename it in the spec (letters, digits and `_`, not starting with a digit)",
        )
    return name


_SAFE_COMMENT = re.compile(r"[^A-Za-z0-9_ ,.:;\[\]()*+\-/'=<>]")


def comment_text(text: object) -> str:
    """Text that is safe inside a comment or docstring: one line, a conservative alphabet."""
    return _SAFE_COMMENT.sub("?", str(text))[:200]


# --------------------------------------------------------------------------- recording constructors


def _recorder(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        # The outermost constructor wins: a subclass calling super().__init__ is not the call written.
        if _RECORD not in self.__dict__:
            object.__setattr__(self, _RECORD, (args, kwargs))
        original(self, *args, **kwargs)

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    return __init__


@contextmanager
def _recording_constructors(classes: Iterable[type]) -> Iterator[None]:
    """While active, instances of ``classes`` remember the arguments they were built with."""
    undo: list[tuple[type, Any]] = []
    try:
        for cls in classes:
            own = cls.__dict__.get("__init__")
            cls.__init__ = _recorder(cls.__init__)  # type: ignore[misc]
            undo.append((cls, own))
        yield
    finally:
        for cls, own in reversed(undo):
            if own is None:
                delattr(cls, "__init__")
            else:
                cls.__init__ = own  # type: ignore[misc]


def _module_classes(module: nn.Module) -> list[type]:
    seen: dict[type, None] = {}
    for m in module.modules():
        if not isinstance(m, fx.GraphModule):
            seen.setdefault(type(m))
    return list(seen)


def build_recorded(prog: Program) -> fx.GraphModule:
    """Build ``prog`` twice: once to learn its module classes, once recording their constructors."""
    from dsl.building.compiler import build_program

    classes = _module_classes(build_program(prog))
    with _recording_constructors(classes):
        return build_program(prog)


# --------------------------------------------------------------------------- inlining source


@dataclass
class _SourceModule:
    """The top-level definitions, constants and imports of one Python module."""

    name: str
    source: str
    defs: dict[str, ast.stmt] = field(default_factory=dict)  # name -> def/class/assignment
    imports: dict[str, tuple[str, str, str | None]] = field(default_factory=dict)  # bound name -> import
    order: dict[str, int] = field(default_factory=dict)
    # name -> the sibling module it comes from (``from .moe_experts import run_experts``): inlined too
    relative: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str) -> _SourceModule:
        module = importlib.import_module(name)
        source = inspect.getsource(module)
        self = cls(name, source)
        for i, stmt in enumerate(ast.parse(source).body):
            self._add(stmt, i)
        return self

    def _add(self, stmt: ast.stmt, i: int) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.defs[stmt.name], self.order[stmt.name] = stmt, i
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    self.defs[t.id], self.order[t.id] = stmt, i
        elif isinstance(stmt, ast.Import):
            for a in stmt.names:
                if a.asname:
                    self.imports[a.asname] = ("import", a.name, a.asname)
                else:
                    top = a.name.split(".")[0]
                    self.imports[top] = ("import", a.name, None)
        elif isinstance(stmt, ast.ImportFrom) and stmt.level > 0:
            origin = importlib.util.resolve_name("." * stmt.level + (stmt.module or ""), self.name.rpartition(".")[0])
            for a in stmt.names:
                if a.asname is None or a.asname == a.name:  # inlined under its own name
                    self.relative[a.name] = origin
        elif isinstance(stmt, ast.ImportFrom) and stmt.module != "__future__" and stmt.level == 0:
            for a in stmt.names:
                self.imports[a.asname or a.name] = ("from", stmt.module or "", a.name if a.asname is None else f"{a.name} as {a.asname}")
        elif isinstance(stmt, ast.If):  # `if TYPE_CHECKING:` imports
            for inner in stmt.body:
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    self._add(inner, i)

    def segment(self, name: str) -> str:
        """The source of definition ``name``, with its decorators and the comment lines just above."""
        node = self.defs[name]
        lines = self.source.splitlines()
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1
        while first > 0 and lines[first - 1].lstrip().startswith("#"):
            first -= 1
        end = node.end_lineno or node.lineno
        return "\n".join(lines[first:end])


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


class _Inliner:
    """Collects the definitions to copy into the generated file, with what they use."""

    def __init__(self) -> None:
        self.modules: dict[str, _SourceModule] = {}
        self.needed: dict[str, set[str]] = {}

    def need(self, module: str, name: str) -> None:
        src = self.modules.get(module) or self.modules.setdefault(module, _SourceModule.parse(module))
        wanted = self.needed.setdefault(module, set())
        todo = [name]
        while todo:
            n = todo.pop()
            if n in src.relative and n not in src.defs:
                self.need(src.relative[n], n)
                continue
            if n in wanted or n not in src.defs:
                continue
            wanted.add(n)
            todo.extend(_names_used(src.defs[n]))

    def imports(self) -> list[tuple[str, str, str | None]]:
        """The imports the inlined definitions use."""
        out: list[tuple[str, str, str | None]] = []
        for module, names in self.needed.items():
            src = self.modules[module]
            used = set().union(*(_names_used(src.defs[n]) for n in names)) if names else set()
            out.extend(src.imports[n] for n in sorted(used) if n in src.imports)
        return out

    def bound_names(self) -> dict[str, str]:
        """Global name -> the module it is defined in; an ExportError if two modules define one."""
        bound: dict[str, str] = {}
        for module, names in self.needed.items():
            for n in names:
                if bound.setdefault(n, module) != module:
                    raise ExportError(f"the inlined `{module}.{n}` clashes with `{bound[n]}.{n}`")
        return bound

    def blocks(self) -> list[str]:
        out = []
        for module, names in self.needed.items():
            src = self.modules[module]
            seen: set[int] = set()
            text = ""
            previous_simple = False
            for n in sorted(names, key=lambda n: src.order[n]):
                node = src.defs[n]
                if id(node) in seen:  # `a = b = 1` binds two names with one statement
                    continue
                seen.add(id(node))
                simple = isinstance(node, (ast.Assign, ast.AnnAssign))
                # constants stay together; definitions get two blank lines as PEP 8 asks
                text += ("\n" if simple and previous_simple else "\n\n\n") + src.segment(n)
                previous_simple = simple
            rule = "-" * max(4, _WIDTH - 12 - len(module))
            out.append(f"# ---- from {module} {rule}{text}")
        return out


# --------------------------------------------------------------------------- expressions


@dataclass
class _Call:
    """``callee(arg, ...)``, printed on one line when it fits, else one argument per line."""

    callee: str
    args: list[Any]  # str or _Call

    def render(self, indent: int) -> str:
        flat = self.flat()
        if indent + len(flat) <= _WIDTH:
            return flat
        pad = " " * (indent + 4)
        inner = [(a.render(indent + 4) if isinstance(a, _Call) else a) for a in self.args]
        return f"{self.callee}(\n" + "".join(f"{pad}{a},\n" for a in inner) + " " * indent + ")"

    def flat(self) -> str:
        return f"{self.callee}(" + ", ".join(a.flat() if isinstance(a, _Call) else a for a in self.args) + ")"


POSITIONAL_KEPT = 2  # `nn.Linear(64, 16, bias=True)`: the sizes stay positional, the rest are named


def _by_name(cls: type, args: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Constructor arguments past the first two as keywords (``NoisyTopKGate(32, 8, k=2,
    noisy=True, ...)`` rather than a row of bare values), where ``cls.__init__`` names them."""
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return args, {}
    named = [p for p in params[:len(args)] if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    if len(named) < len(args):  # *args, or positional-only: as recorded
        return args, {}
    keep = min(POSITIONAL_KEPT, len(args))
    return args[:keep], {p.name: a for p, a in zip(named[keep:], args[keep:], strict=True)}


def _kw(key: str, value: Any) -> Any:
    if isinstance(value, _Call):
        return _Call(f"{key}={value.callee}", value.args)
    return f"{key}={value}"


def _constant(v: Any) -> str | None:
    """Python source for a plain constant, or None."""
    if v is None or isinstance(v, (bool, int, str)):
        return repr(v)
    if isinstance(v, float):
        if math.isnan(v):
            return 'float("nan")'
        if math.isinf(v):
            return 'float("inf")' if v > 0 else '-float("inf")'
        return repr(v)
    if isinstance(v, torch.dtype):
        return str(v)  # "torch.float32"
    return None


# --------------------------------------------------------------------------- the emitter


_STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"math", "typing", "collections", "operator"}
_BUILTIN_NAMES = set(dir(builtins))
# Names a generated class may not take: inside its methods they mean something else.
_NOT_CLASS_NAMES = frozenset({"self", "super", "cls", *keyword.kwlist, *keyword.softkwlist})


class PythonEmitter:
    """Turns a recorded build (:func:`build_recorded`) into the text of one Python file."""

    def __init__(self) -> None:
        self.inliner = _Inliner()
        self.imports: set[tuple[str, str, str | None]] = {("from", "torch", "nn"), ("import", "torch", None)}
        self.globals: dict[str, str] = {"torch": "import torch", "nn": "from torch import nn"}
        self.classes: list[str] = []  # generated class sources, dependencies first
        self.class_of_body: dict[tuple[str, str], str] = {}

    # ---- global names

    def _bind(self, name: str, origin: str) -> str:
        """Reserve global ``name`` for ``origin``; an ExportError if something else holds it."""
        held = self.globals.get(name)
        if held is not None and held != origin:
            raise ExportError(
                f"the generated file would bind `{name}` twice ({held}; {origin})",
                help="rename the model or block so that it does not clash with a library name",
            )
        self.globals[name] = origin
        return name

    def _import(self, module: str, name: str) -> str:
        """``from module import name``, returning the name to use."""
        self.imports.add(("from", module, name))
        return self._bind(name, f"from {module} import {name}")

    def _inline(self, module: str, name: str) -> str:
        self.inliner.need(module, name)
        return self._bind(name, f"defined in {module}")

    def _fresh_class_name(self, base: str) -> str:
        """``base``, or ``base_2``, ... when the file binds that name already or may bind it
        later (a block named ``Hopfield`` or ``F`` must not shadow the inlined one)."""
        if base.startswith("_") or base in _NOT_CLASS_NAMES:  # `self()` or `__class__()` in a method is not it
            base = "Block_" + base.strip("_")
        name, i = base, 1
        taken = set(self.globals) | _BUILTIN_NAMES | _inlinable_names()
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        return name

    # ---- references to classes and functions

    def class_ref(self, cls: type) -> str:
        module, name = cls.__module__, cls.__qualname__
        if getattr(nn, name, None) is cls:
            return f"nn.{name}"
        if module == "dsl" or module.startswith("dsl."):
            if "." in name:
                raise ExportError(f"cannot inline the nested class `{module}.{name}`")
            return self._inline(module, name)
        return self._import(_public_module(cls), cls.__name__)

    def function_ref(self, fn: Any) -> str:
        module = getattr(fn, "__module__", None) or ""
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "")
        if module == "dsl" or module.startswith("dsl."):
            return self._inline(module, name)
        public = _torch_public_name(fn)
        if public is not None:
            return public
        try:
            qualified = fx.node._get_qualified_name(fn)
        except Exception as e:  # torch raises RuntimeError for what it cannot name
            raise ExportError(f"cannot write a reference to {fn!r}: {e}") from None
        if qualified.startswith("torch."):
            return qualified
        return self._import(_public_module(fn), fn.__name__)

    # ---- values and modules

    def value(self, v: Any) -> Any:
        """Source for a constructor argument: a constant, a module, a list of them."""
        c = _constant(v)
        if c is not None:
            return c
        if isinstance(v, nn.Module):
            return self.module(v)
        if isinstance(v, (list, tuple)):
            items = [self.value(x) for x in v]
            if isinstance(v, list) and len(items) > 1 and isinstance(items[0], _Call):
                if all(isinstance(x, _Call) and x.flat() == items[0].flat() for x in items):
                    return _Comprehension(items[0], len(items))
            flat = [x.flat() if isinstance(x, _Call) else x for x in items]
            if isinstance(v, tuple):
                return "(" + ", ".join(flat) + ("," if len(flat) == 1 else "") + ")"
            return "[" + ", ".join(flat) + "]"
        if isinstance(v, dict) and all(isinstance(k, str) for k in v):
            return "{" + ", ".join(f"{k!r}: {_flat(self.value(x))}" for k, x in v.items()) + "}"
        if isinstance(v, torch.device):
            return f"torch.device({str(v)!r})"
        if isinstance(v, type) and issubclass(v, nn.Module):
            return self.class_ref(v)
        if callable(v):
            return self.function_ref(v)
        raise ExportError(f"cannot write the constructor argument {type(v).__name__} {v!r:.60} as Python source")

    def module(self, m: nn.Module) -> _Call:
        if isinstance(m, fx.GraphModule):
            return _Call(self.graph_class(m), [])
        record = m.__dict__.get(_RECORD)
        if record is None:
            raise ExportError(
                f"cannot tell how the `{type(m).__qualname__}` module was constructed",
                help="its builder must construct every module it returns (not copy or alter one)",
            )
        args, kwargs = record
        args, named = _by_name(type(m), args)
        parts: list[Any] = [self.value(a) for a in args]
        parts += [_kw(check_identifier(k, "keyword argument"), self.value(v)) for k, v in {**named, **kwargs}.items()]
        return _Call(self.class_ref(type(m)), parts)

    def learned_tensor(self, name: str, p: nn.Parameter) -> str:
        """The call that made a learned tensor (``Parameter(...)`` in the spec)."""
        made = getattr(p, MADE_BY, None)
        if made is None:
            raise ExportError(f"cannot tell how the learned tensor `{name}` was made")
        fn, args, kwargs = made
        parts = [_flat(self.value(a)) for a in args]
        parts += [f"{check_identifier(k, 'keyword argument')}={_flat(self.value(v))}" for k, v in kwargs.items()]
        return f"{self.function_ref(fn)}({', '.join(parts)})"

    # ---- graph modules

    def graph_class(self, gm: fx.GraphModule, name: str | None = None) -> str:
        """The name of a generated class whose instances equal ``gm`` (written once per body)."""
        base = check_identifier(name or type(gm).__name__, "model or block name")
        if [b for b in gm._buffers if b]:
            raise ExportError(f"`{base}` holds buffers of its own; only submodules and learned tensors can be written")
        children = list(gm.named_children())
        if len({id(c) for _, c in children}) != len(children):
            raise ExportError(f"`{base}` registers one module under two names")
        init = [f"self.{check_identifier(k, 'submodule name')} = {self.module(c).render(8)}" for k, c in children]
        init += [f"self.{check_identifier(k, 'parameter name')} = {self.learned_tensor(k, p)}"
                 for k, p in gm._parameters.items() if p is not None]
        init += _tied_weights(gm)
        forward = _ForwardPrinter(self, gm).lines()
        body = "\n".join(init) + "\n" + "\n".join(forward)
        key = (base, body)
        if key in self.class_of_body:
            return self.class_of_body[key]
        cls = self._fresh_class_name(base)
        self._bind(cls, f"generated class for {base}")
        self.class_of_body[key] = cls
        init_src = "\n".join(f"        {line}" for line in init) if init else "        pass"
        self.classes.append(
            f"class {cls}(nn.Module):\n"
            f"    def __init__(self) -> None:\n"
            f"        super().__init__()\n"
            + (init_src + "\n" if init else "")
            + "\n"
            + "\n".join(f"    {line}" if line else "" for line in forward)
        )
        return cls

    # ---- the file

    def render(self, top: str | Sequence[str], header: str, tail: str = "") -> str:
        """The file: ``header``, imports, inlined code, the classes, ``tail``; ``__all__`` lists ``top``."""
        exports = [top] if isinstance(top, str) else list(top)
        blocks = self.inliner.blocks()
        for imp in self.inliner.imports():
            self.imports.add(imp)
            kind, module, name = imp
            bound = (name.split(" as ")[-1] if kind == "from" and name else (name or module.split(".")[0]))
            self._bind(bound, _import_line(imp))  # a clash with a generated class is an error, never a skip
        for name, module in self.inliner.bound_names().items():
            if name in self.globals and self.globals[name] != f"defined in {module}":
                raise ExportError(f"the inlined `{module}.{name}` clashes with `{name}` ({self.globals[name]})")
        head = f"{header}\n\nfrom __future__ import annotations\n\n{_import_block(self.imports)}"
        body = "\n\n\n".join(p.rstrip() for p in [head, *blocks, *self.classes, *([tail] if tail else [])])
        return f"{body}\n\n\n__all__ = [{', '.join(repr(e) for e in exports)}]\n"


def _tied_weights(gm: nn.Module) -> list[str]:
    """``self.logits.weight = self.emb.weight`` for each weight a module shares with an earlier one."""
    first: dict[int, str] = {}
    lines = []
    for path, p in gm.named_parameters(remove_duplicate=False):
        if id(p) not in first:
            first[id(p)] = path
            continue
        parts = [check_identifier(x, "submodule name") for x in path.split(".")]
        source = [check_identifier(x, "submodule name") for x in first[id(p)].split(".")]
        lines.append(f"self.{'.'.join(parts)} = self.{'.'.join(source)}")
    return lines


def _subscript(key: Any, arg: Callable[[Any], str]) -> str:
    """The text inside ``x[...]`` for an ``operator.getitem`` key: ``:T``, ``:, 0``, ``..., :k``."""
    items = key if isinstance(key, tuple) else (key,)

    def item(k: Any) -> str:
        if k is Ellipsis:
            return "..."
        if isinstance(k, slice):
            parts = ["" if v is None else arg(v) for v in (k.start, k.stop)]
            return ":".join(parts) + ("" if k.step is None else f":{arg(k.step)}")
        return arg(k)

    return ", ".join(item(k) for k in items)  # x[(k,)] is x[k] in torch


class _Comprehension(_Call):
    """``[expr for _ in range(n)]``: n modules built the same way (each with its own weights)."""

    def __init__(self, item: _Call, count: int):
        super().__init__("", [item])
        self.count = count

    def flat(self) -> str:
        return f"[{self.args[0].flat()} for _ in range({self.count})]"

    def render(self, indent: int) -> str:
        flat = self.flat()
        if indent + len(flat) <= _WIDTH:
            return flat
        pad = " " * (indent + 4)
        return f"[\n{pad}{self.args[0].render(indent + 4)}\n{pad}for _ in range({self.count})\n" + " " * indent + "]"


_INLINABLE: set[str] = set()


def _inlinable_names() -> set[str]:
    """Every global name that inlining a module of ``dsl.blocks.nn`` can bind (defs and imports)."""
    if not _INLINABLE:
        import pkgutil

        import dsl.blocks.nn as package

        for info in pkgutil.iter_modules(package.__path__):
            src = _SourceModule.parse(f"dsl.blocks.nn.{info.name}")
            _INLINABLE.update(src.defs, src.imports)
    return _INLINABLE


def _flat(x: Any) -> str:
    return x.flat() if isinstance(x, _Call) else str(x)


_TORCH_NAMESPACES = ("torch", "torch.nn.functional", "torch.linalg", "torch.special", "torch.fft")


def _torch_public_name(fn: Any) -> str | None:
    """``torch.nn.functional.gelu`` rather than ``torch._C._nn.gelu``: the documented spelling."""
    name = getattr(fn, "__name__", None)
    if not isinstance(name, str):
        return None
    for namespace in _TORCH_NAMESPACES:
        if getattr(importlib.import_module(namespace), name, None) is fn:
            return f"{namespace}.{name}"
    return None


def _public_module(obj: Any) -> str:
    """The shortest importable module path that exposes ``obj`` under its name
    (``torch_geometric.nn`` rather than ``torch_geometric.nn.conv.gat_conv``)."""
    module = obj.__module__
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        candidate = ".".join(parts[:i])
        try:
            if getattr(importlib.import_module(candidate), obj.__name__, None) is obj:
                return candidate
        except Exception:  # an importable prefix is only a nicer spelling
            continue
    return module


def _import_line(imp: tuple[str, str, str | None]) -> str:
    kind, module, name = imp
    if kind == "from":
        return f"from {module} import {name}"
    return f"import {module}" + (f" as {name}" if name else "")


def _import_block(imports: set[tuple[str, str, str | None]]) -> str:
    """isort-like: plain imports then from-imports, standard library first, one group each."""
    groups: dict[bool, list[str]] = {True: [], False: []}
    froms: dict[tuple[bool, str], set[str]] = {}
    for kind, module, name in imports:
        std = module.split(".")[0] in _STDLIB
        if kind == "from":
            froms.setdefault((std, module), set()).add(name or "")
        else:
            groups[std].append(_import_line((kind, module, name)))
    for (std, module), names in froms.items():
        groups[std].append(f"from {module} import " + ", ".join(sorted(names)))
    out = []
    for std in (True, False):
        lines = sorted(set(groups[std]), key=lambda s: (s.startswith("from"), s.split()[1].lower()))
        if lines:
            out.append("\n".join(lines))
    return "\n\n".join(out)


class _ForwardPrinter:
    """Prints ``forward`` from an fx graph: one statement per node, spec names, shape comments."""

    def __init__(self, emitter: PythonEmitter, gm: fx.GraphModule):
        self.e = emitter
        self.gm = gm
        self.names: dict[fx.Node, str] = {}
        self.callees: dict[fx.Node, str] = {}

    def lines(self) -> list[str]:
        nodes = list(self.gm.graph.nodes)
        for n in nodes:  # resolve callees first: the globals they bind are off limits for locals
            if (n.op == "call_function" and n.target not in _INFIX
                    and n.target not in (operator.neg, operator.getitem, getattr)):
                self.callees[n] = self.e.function_ref(n.target)
            elif n.op not in ("placeholder", "call_module", "call_function", "call_method", "get_attr", "output"):
                raise ExportError(f"cannot print the graph node `{n.name}` ({n.op})")
        taken = set(self.e.globals) | {"self", "torch", "nn"}
        params = []
        for n in nodes:
            if n.op == "placeholder":
                name = check_identifier(n.target, "input name")
                if name in taken:
                    raise ExportError(f"the input name `{name}` clashes with a global name of the generated file",
                                      help="rename the input in the spec")
                self.names[n] = name
                params.append(n)
        used = {self.names[p] for p in params}
        for n in nodes:
            if n.op not in ("placeholder", "output"):
                base = check_identifier(n.name, "node name")
                name, i = base, 1
                while name in taken or name in used:
                    name = f"{base}_{i}"
                    i += 1
                used.add(name)
                self.names[n] = name
        sig = ", ".join(f"{self.names[p]}: torch.Tensor" for p in params)
        out_node = next(n for n in nodes if n.op == "output")
        doc = ["def forward(self" + (", " + sig if sig else "") + f") -> {self._return_type(out_node.args[0])}:"]
        described = [f"{self.names[p]}: {comment_text(p.meta['dsl_type'])}" for p in params if "dsl_type" in p.meta]
        if described:
            doc.append('    """Inputs: ' + "; ".join(described) + '."""')
        body = []
        for n in nodes:
            stmt = self.statement(n)
            if stmt:
                body.append("    " + stmt)
        return doc + body

    def _return_type(self, value: Any) -> str:
        if isinstance(value, dict):
            return "dict[str, torch.Tensor]"
        if isinstance(value, (tuple, list)):
            return "tuple[" + ", ".join("torch.Tensor" for _ in value) + "]"
        return "torch.Tensor"

    def arg(self, a: Any, operand: bool = False) -> str:
        """Source for a graph argument; ``operand``: it stands next to an operator."""
        if isinstance(a, fx.Node):
            return self.names[a]
        if isinstance(a, (list, tuple)):
            inner = ", ".join(self.arg(x) for x in a)
            return f"[{inner}]" if isinstance(a, list) else f"({inner}{',' if len(a) == 1 else ''})"
        if isinstance(a, dict):
            return "{" + ", ".join(f"{k!r}: {self.arg(v)}" for k, v in a.items()) + "}"
        c = _constant(a)
        if c is None:
            raise ExportError(f"cannot write the graph constant {a!r:.60}")
        return f"({c})" if operand and c.startswith("-") else c

    def call_args(self, n: fx.Node) -> str:
        parts = [self.arg(a) for a in n.args]
        parts += [f"{check_identifier(k, 'keyword argument')}={self.arg(v)}" for k, v in n.kwargs.items()]
        return ", ".join(parts)

    def _unpacked(self, n: fx.Node) -> list[fx.Node] | None:
        """The getitem users of ``n`` in index order when they cover 0..k-1 exactly once."""
        users = list(n.users)
        if not users or any(u.op != "call_function" or u.target is not operator.getitem for u in users):
            return None
        by_index = {u.args[1]: u for u in users if isinstance(u.args[1], int)}
        if len(by_index) != len(users) or set(by_index) != set(range(len(users))):
            return None
        return [by_index[i] for i in range(len(users))]

    def statement(self, n: fx.Node) -> str | None:
        if n.op == "placeholder":
            return None
        if n.op == "output":
            return "return " + self.arg(n.args[0])
        if n.op == "call_function" and n.target is operator.getitem and self._unpacked(n.args[0]) is not None:
            return None  # written as the tuple unpacking of its source
        if n.op == "call_module":
            expr = f"self.{check_identifier(n.target, 'submodule name')}({self.call_args(n)})"
        elif n.target in _INFIX:
            a, b = (self.arg(x, operand=True) for x in n.args)
            expr = f"{a} {_INFIX[n.target]} {b}"
        elif n.target is operator.neg:
            expr = f"-{self.arg(n.args[0], operand=True)}"
        elif n.op == "get_attr":
            expr = f"self.{check_identifier(n.target, 'parameter name')}"
        elif n.op == "call_method":
            rest = self.call_args(n).split(", ", 1)[1:] if len(n.args) > 1 or n.kwargs else []
            expr = f"{self.arg(n.args[0], operand=True)}.{check_identifier(n.target, 'method')}({''.join(rest)})"
        elif n.target is getattr:
            expr = f"{self.arg(n.args[0], operand=True)}.{check_identifier(n.args[1], 'attribute')}"
        elif n.target is operator.getitem:
            expr = f"{self.arg(n.args[0], operand=True)}[{_subscript(n.args[1], self.arg)}]"
        else:
            expr = f"{self.callees[n]}({self.call_args(n)})"
        parts = self._unpacked(n)
        if parts is not None:
            target = ", ".join(self.names[p] for p in parts)
            note = ", ".join(comment_text(p.meta.get("dsl_type", "?")) for p in parts)
        else:
            target = self.names[n]
            note = comment_text(n.meta["dsl_type"]) if "dsl_type" in n.meta else ""
        span = n.meta.get("span")
        line = getattr(span, "line", 0)
        where = f"spec line {line}" if isinstance(line, int) and line > 0 else ""
        comment = "  ".join(x for x in (note, where) if x)
        return f"{target} = {expr}" + (f"  # {comment}" if comment else "")


# --------------------------------------------------------------------------- entry point


def check_names(prog: Program) -> None:
    """Every name of ``prog`` (and of its user blocks) that becomes Python: model, inputs,
    nodes, submodules. Checked before anything is built: the spec is untrusted input."""
    todo, seen = [prog], set()
    while todo:
        p = todo.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        check_identifier(p.name, "model or block name")
        for node in p.nodes:
            check_identifier(node.name, "node name")
            if node.kind == "input":
                check_identifier(node.op, "input name")
            if node.module is not None:
                check_identifier(node.module, "submodule name")
        for key, m in p.modules.items():
            check_identifier(key, "submodule name")
            if m.program is not None:
                todo.append(m.program)


def emit_python(prog: Program, source: str | None = None, trained: Any = None) -> str:
    """The text of a standalone Python file defining the model of ``prog``.

    ``trained`` (:class:`dsl.exporting.runs.TrainedPython`) adds a run's preprocessing and a
    ``load()`` of its weights after the model's class, and writes the header for them."""
    check_names(prog)
    try:
        model = build_recorded(prog)
    except ExportError:
        raise
    except Exception as e:  # the spec compiled once already: this is about recording, say so
        raise ExportError(f"rebuilding the model for export failed: {type(e).__name__}: {e}") from None
    emitter = PythonEmitter()
    top = emitter.graph_class(model, check_identifier(prog.name, "model name"))
    if trained is not None:
        header, tail, exports = trained.decorate(emitter, top, model, source)
        return emitter.render(exports, header, tail)
    origin = f" from {comment_text(source)}" if source else ""
    header = (
        f'"""{top}: a standalone PyTorch module generated by `dsl compile --emit python`{origin}.\n\n'
        "It needs torch (and the libraries imported below), not dsl. Weights load from the\n"
        "compiled model key for key:\n\n"
        f"    model = {top}()\n"
        "    model.load_state_dict(compiled.state_dict())\n"
        '"""'
    )
    return emitter.render(top, header)


def write_python(prog: Program, model: nn.Module, path: str, source: str | None = None) -> float:
    """Write the standalone file to ``path``, import it, load ``model``'s weights into it and
    return the max abs difference of their outputs on random inputs (sizes unlike the trace's)."""
    from dsl.exporting.formats import check_inputs, flat_outputs, max_abs_diff, reference_outputs

    text = emit_python(prog, source)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    try:
        generated = load_generated(path, generated_class_name(text))()
    except Exception as e:  # e.g. -o /dev/null: nothing to import back
        _remove_written(path)
        raise ExportError(f"the written file cannot be imported back: {type(e).__name__}: {e}") from None
    keys, expected_keys = list(generated.state_dict()), list(model.state_dict())
    if keys != expected_keys:
        _remove_written(path)
        missing = sorted(set(expected_keys) - set(keys))[:3]
        raise ExportError(f"the generated module's weights differ from the compiled module's (e.g. {missing})")
    _copy_weights(generated, model)
    generated.eval()
    inputs = check_inputs(prog)
    expected = reference_outputs(model, inputs)
    with torch.no_grad():
        actual = flat_outputs(generated(**inputs))
    return max_abs_diff(expected, actual)


def _copy_weights(generated: nn.Module, model: nn.Module) -> None:
    """``model``'s weights into ``generated``, key for key (the keys are known equal). Not
    ``load_state_dict``: it filters every key once per child, quadratic in a model of 10,000 layers."""
    with torch.no_grad():
        pairs = zip(generated.state_dict(keep_vars=True).items(), model.state_dict(keep_vars=True).values(),
                    strict=True)
        for (key, dst), src in pairs:
            if dst.shape != src.shape:
                raise ExportError(f"the generated module's `{key}` is {list(dst.shape)}, the compiled module's "
                                  f"{list(src.shape)}")
            dst.copy_(src)


def _remove_written(path: str) -> None:
    """Leave no broken file behind (a regular file only: ``-o /dev/null`` stays)."""
    if os.path.isfile(path):
        os.unlink(path)


def load_generated(path: str, class_name: str) -> type[nn.Module]:
    """Import a generated file (under a private module name) and return its model class."""
    import importlib.machinery
    import importlib.util

    class NoBytecodeLoader(importlib.machinery.SourceFileLoader):
        """Reads the file's source every time and writes no bytecode: a ``__pycache__`` beside it
        (stale, or planted) is never run, and the check leaves none in the user's folder."""

        def get_code(self, fullname: str) -> Any:
            return self.source_to_code(self.get_data(self.path), self.path)

        def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
            pass

    # An explicit source loader: the path need not end in .py (-o model.txt works too).
    loader = NoBytecodeLoader(f"_dsl_generated_{abs(hash(path))}", path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return getattr(module, class_name)


def generated_class_name(text: str) -> str:
    """The model class of a generated file (the one ``__all__`` names)."""
    match = re.search(r"^__all__ = \['(\w+)'", text, re.M)
    if match is None:
        raise ExportError("not a file written by `dsl compile --emit python`")
    return match.group(1)


__all__: Sequence[str] = [
    "ExportError", "emit_python", "write_python", "build_recorded", "check_identifier", "load_generated",
]
