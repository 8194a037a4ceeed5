"""Check: elaborate the resolved model into a typed :class:`~dsl.checking.program.Program`.

Pure Python. One walk over the model's statements does name resolution, arity,
hyperparameter validation (each block's pydantic model), ``repeat`` unrolling,
composite block instantiation, block values, and symbolic shape inference with
unification. Every problem becomes a diagnostic; a value whose computation
failed is poisoned so that one mistake is reported once, not at every use.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from dsl.checking.program import (
    AuxEntry,
    ModuleSpec,
    PNode,
    Program,
    Ref,
    SizeBound,
    SizeSource,
    describe_params,
)
from dsl.checking.scope import (
    POISON,
    BlockValueVal,
    ConstVal,
    InstanceVal,
    Poison,
    Scope,
    TensorVal,
    Value,
)
from dsl.checking.values import DeclValue, UserBlockValue
from dsl.language import ir, registry
from dsl.language.diagnostics import Diagnostic, Span, did_you_mean
from dsl.language.printer import expr_to_text as ir_text
from dsl.language.printer import subscript_text
from dsl.language.registry import Decl, InstanceRef
from dsl.language.reserved import NOT_INPUT_NAMES
from dsl.language.resolve import MAX_REPEAT, Const, ConstError, Resolved, coerce, eval_const
from dsl.language.shapes import (
    DimConflict,
    DimEnv,
    ShapeCall,
    ShapeError,
    Sym,
    TensorType,
    broadcast,
    dim_add,
    dim_mul,
    dim_str,
)

MAX_NODES = 200_000
MAX_BLOCK_DEPTH = 32
# Input names reach generated code as forward() parameters: these would break it.


def _pydantic_message(msg: str) -> str:
    """pydantic's "Value error, a size of 0 ..." as "a size of 0 ...", other messages lower-cased in front."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg[:1].lower() + msg[1:]


def _is_block_name(name: str) -> bool:
    return name[:1].isupper()


def _line_of(span: Span, here: Span | None) -> str:
    if here is not None and here.file == span.file:
        return f"line {span.line}"
    return f"{os.path.basename(span.file)}:{span.line}"


class UnreadSize(ConstError):
    """A name the unreadable data would have declared: poisons its use without a second error."""


class Checker:
    def __init__(self, res: Resolved, dims: dict[str, int] | None = None, data_dims: dict[str, int] | None = None,
                 data_unread: bool = False):
        """``dims``: sizes the caller gives; ``data_dims``: sizes the train section's data binds
        (the guard keeps those free, :mod:`dsl.building.guards`); ``data_unread``: the data
        declares sizes but could not be read (its error is reported)."""
        self.res = res
        self.data_unread = data_unread
        self.env = DimEnv()
        self.diags: list[Diagnostic] = list(res.diagnostics)
        self.registry = registry.load()
        self.dims = dict(dims or {})
        self.data_dims = {k: v for k, v in (data_dims or {}).items() if k not in self.dims}
        self.stack: list[str] = []
        self.count = 0
        self.model_scope: Scope | None = None  # the model body's names when it ends (the train section reads them)
        self.pending_bounds: list[SizeBound] = []  # sizes slices rely on, checked at run time by the guard

    # ------------------------------------------------------------------ helpers

    def error(self, code: str, message: str, span: Span, label: str = "", help: str | None = None) -> Diagnostic:
        d = Diagnostic(code, message, span, label=label, help=help)
        self.diags.append(d)
        return d

    def _in_block_note(self, d: Diagnostic, scope: Scope) -> None:
        if scope.block and scope.call_span is not None:
            d.note(f"in `{scope.block}`, instantiated here", scope.call_span)

    def lookup_const(self, scope: Scope, name: str, span: Span) -> Const:
        if name in scope.consts:
            return scope.consts[name]
        val = scope.names.get(name)
        if isinstance(val, TensorVal):
            raise ConstError(f"`{name}` is a tensor, but a constant is needed here", span, "E0207")
        size = self.size_value(name, scope)
        if size is not None:
            return size
        if self.unread_size(name):
            raise UnreadSize(f"`{name}` is a size the unread data would declare", span, "E0201")
        raise ConstError(
            f"unknown name `{name}`", span, "E0201", help=did_you_mean(name, list(scope.consts) + list(scope.names))
        )

    def unread_size(self, name: str) -> bool:
        """Whether ``name`` may be a size (``N_<column>``) that the data would have declared had
        it been readable; the data's own error says what is wrong, so no second one is made."""
        return self.data_unread and name.startswith("N_")

    def const(self, expr: ir.Expr, scope: Scope) -> Const | Poison:
        try:
            return eval_const(expr, lambda n, s: self.lookup_const(scope, n, s))
        except UnreadSize:
            return POISON
        except ConstError as e:
            d = self.error(e.code, e.message, e.span, help=e.help)
            self._in_block_note(d, scope)
            return POISON

    # ------------------------------------------------------------------ entry points

    def check_model(self) -> Program | None:
        model = self.res.model
        if model is None:
            return None
        consts: dict[str, Const] = {k: v.value for k, v in self.res.params.items()}
        consts.update({k: v.value for k, v in self.res.model_args.items()})
        spans = {k: v.span for k, v in self.res.params.items()}
        scope = Scope(consts=consts, const_spans=spans)
        for origin, sizes in (("given", self.dims), ("data", self.data_dims)):
            for name, size in sizes.items():
                self.env.declare(name)
                self.env.value[name] = size
                self.env.origin[name] = origin
        prog = Program(name=model.name, env=self.env, span=model.name_span or model.span)
        self.stack.append(model.name)
        self.body(model.body, scope, prog, inputs=None)
        self.stack.pop()
        self.model_scope = scope
        prog.bounds.extend(self.pending_bounds)
        # without the data's sizes a value may be left unknown: its output is missing for that reason
        if not prog.outputs and not self.data_unread and not any(d.severity == "error" for d in self.diags):
            self.error("E0212", f"model `{model.name}` has no `output`", model.name_span or model.span,
                       help="mark a result with `output name`")
        return prog

    # ------------------------------------------------------------------ statements

    def body(self, stmts: Sequence[Any], scope: Scope, prog: Program, inputs: list[TensorVal | Poison] | None) -> None:
        """Elaborate statements. ``inputs`` are the actual arguments of a block call."""
        remaining = list(inputs) if inputs is not None else None
        for stmt in stmts:
            if isinstance(stmt, ir.Input):
                self.input(stmt, scope, prog, remaining)
            elif isinstance(stmt, ir.Assign):
                self.assign(stmt, scope, prog)
            elif isinstance(stmt, ir.Output):
                self.output(stmt, scope, prog)
            elif isinstance(stmt, ir.Repeat):
                self.repeat(stmt, scope, prog)

    def declared_type(self, decl: ir.TensorDecl, scope: Scope) -> TensorType | Poison:
        dims: list[Any] = []
        variadic = False
        assert decl.shape is not None
        for d in decl.shape.dims:
            if isinstance(d, ir.Ellipsis_):
                variadic = True
                continue
            if isinstance(d, ir.Wildcard):
                dims.append(None)
                continue
            v = self.dim_value(d, scope)
            if isinstance(v, Poison):
                return POISON
            dims.append(v)
        return TensorType(tuple(dims), decl.dtype or "float", variadic)

    def dim_value(self, expr: Any, scope: Scope) -> Any:
        """A shape dim: int, a symbolic name (capitalised), params and arithmetic."""
        if isinstance(expr, ir.Num):
            if not isinstance(expr.value, int) or expr.value < 0:
                self.error("E0305", f"a dimension must be a non-negative integer, found {expr.value}", expr.span)
                return POISON
            return expr.value
        if isinstance(expr, ir.Name):
            if expr.id in scope.consts:
                v = scope.consts[expr.id]
                if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                    return v
                self.error("E0305", f"`{expr.id}` = {v!r} cannot be a dimension", expr.span)
                return POISON
            if _is_block_name(expr.id):
                return self.symbol(expr.id, scope)
            self.error("E0201", f"unknown name `{expr.id}` in a shape", expr.span,
                       help=did_you_mean(expr.id, list(scope.consts)) or "symbolic dims start with a capital letter (N, B, F)")
            return POISON
        if isinstance(expr, ir.BinOp) and expr.op in ("+", "-", "*"):
            a, b = self.dim_value(expr.left, scope), self.dim_value(expr.right, scope)
            if isinstance(a, Poison) or isinstance(b, Poison):
                return POISON
            if expr.op == "+":
                return dim_add(a, b)
            if expr.op == "-":
                return dim_add(a, dim_mul(b, -1))
            return dim_mul(a, b)
        v = self.const(expr, scope)
        if isinstance(v, Poison):
            return POISON
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
        self.error("E0305", f"a dimension must be a non-negative integer, found {v!r}", expr.span)
        return POISON

    def size_value(self, name: str, scope: Scope) -> Sym | None:
        """A symbolic dim of the inputs used as a value (``pos[:T]``): its size, or None if
        ``name`` is no such dim here."""
        if not _is_block_name(name) or name in scope.names:
            return None
        if scope.symbols is not None:  # a block's dims are its own
            return scope.symbols.get(name)
        return Sym(name) if name in self.env.parent or name in self.env.value else None

    def symbol(self, name: str, scope: Scope) -> Sym:
        if scope.symbols is None:
            return self.env.declare(name)
        if name not in scope.symbols:
            scope.symbols[name] = self.env.fresh(name)
        return scope.symbols[name]

    def input(self, stmt: ir.Input, scope: Scope, prog: Program, actual: list[TensorVal | Poison] | None) -> None:
        if stmt.name in NOT_INPUT_NAMES:
            self.error("E0213", f"`{stmt.name}` cannot name an input", stmt.span,
                       label="inputs become the parameters of the compiled module's forward()",
                       help=f"rename it, e.g. `{stmt.name}_`: Python keywords, `self` and `torch` cannot be parameters there")
            scope.names[stmt.name] = POISON
            return
        if stmt.name in prog.inputs:
            self.error("E0203", f"input `{stmt.name}` is declared twice", stmt.span)
            return
        declared = self.declared_type(stmt, scope) if stmt.shape is not None else TensorType((), stmt.dtype or "float", True)
        if actual is not None:  # block instantiation: bind the caller's argument
            if not actual:
                scope.names[stmt.name] = POISON
                return
            arg = actual.pop(0)
            if isinstance(arg, Poison) or isinstance(declared, Poison):
                scope.names[stmt.name] = POISON
                node = prog.add(PNode(prog.unique(stmt.name), "input", stmt.name, stmt.span, types=[TensorType((), "float", True)], var=stmt.name))
                prog.inputs[stmt.name] = Ref(node.name)
                return
            self.unify_declared(arg, declared, stmt, scope)
            t = self.env.resolve_type(arg.type)
        else:
            if isinstance(declared, Poison):
                scope.names[stmt.name] = POISON
                return
            t = declared
            self.env.apart.update(d.name for d in t.shape if isinstance(d, Sym) and d.name is not None)
        node = prog.add(PNode(prog.unique(stmt.name), "input", stmt.name, stmt.span, types=[t], var=stmt.name))
        prog.inputs[stmt.name] = Ref(node.name)
        scope.names[stmt.name] = TensorVal(Ref(node.name), t, stmt.span, stmt.name)
        if not isinstance(declared, Poison):
            self.record_sizes(declared, node.name, prog)

    def record_sizes(self, declared: TensorType, node: str, prog: Program) -> None:
        """Where the run-time size of each symbolic dim of an input is read (sizes as values)."""
        n = len(declared.shape)
        for axis, d in enumerate(declared.shape):
            if isinstance(d, Sym) and d.name is not None:
                prog.sizes.append(SizeSource(d.name, node, axis - n if declared.variadic else axis))

    def unify_declared(self, arg: TensorVal, declared: TensorType, stmt: ir.Input, scope: Scope) -> None:
        actual = self.env.resolve_type(arg.type)
        ok = self._unify_types(actual, declared)
        if not ok or (stmt.dtype is not None and actual.dtype != declared.dtype):
            code = "E0302" if ok else "E0301"
            what = "dtype" if ok else "shape"
            span = arg.use_span or scope.call_span or stmt.span
            d = self.error(code, f"{what} mismatch in argument `{stmt.name}` of `{scope.block}`", span,
                           label=f"expected {self._show_decl(declared)}, found {actual}")
            d.note(f"`{scope.block}` declares `input {stmt.name}: {self._show_decl(declared)}`", stmt.span)
            self.explain(d, arg)

    def _show_decl(self, t: TensorType) -> str:
        return str(self.env.resolve_type(t))

    def _unify_types(self, actual: TensorType, want: TensorType) -> bool:
        """Unify shapes (rank and dims); False on a conflict."""
        a, w = list(actual.shape), list(want.shape)
        if want.variadic:
            if len(a) < len(w) and not actual.variadic:
                return False
            a = a[len(a) - len(w):] if w else []
            if len(a) < len(w):
                a = [None] * (len(w) - len(a)) + a
        elif actual.variadic:
            if len(a) > len(w):
                return False
            a = [None] * (len(w) - len(a)) + a
        elif len(a) != len(w):
            return False
        try:
            for x, y in zip(a, w):
                self.env.unify(x, y)
        except DimConflict:
            return False
        return True

    def explain(self, d: Diagnostic, val: Any) -> None:
        if isinstance(val, TensorVal) and val.var:
            t = self.env.resolve_type(val.type)
            because = f" because {val.type.why}" if val.type.why else ""
            d.note(f"`{val.var}` is {t}{because} ({_line_of(val.span, d.span)})")

    def assign(self, stmt: ir.Assign, scope: Scope, prog: Program) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            if self.count == MAX_NODES + 1:
                self.error("E0801", f"model has more than {MAX_NODES} statements after unrolling", stmt.span)
            return
        names = [t.name for t in stmt.targets]
        value = stmt.value
        if isinstance(value, ir.Call):
            results = self.call(value, scope, prog, var=names[0], n_targets=len(names))
        else:
            results = [self.tensor_expr(value, scope, prog, var=names[0])]
        if len(results) == 1 and isinstance(results[0], (BlockValueVal,)):
            if len(names) != 1:
                self.error("E0210", "a block value binds exactly one name", stmt.span)
                return
            bv = results[0]
            module = prog.unique(names[0])
            scope.names[names[0]] = InstanceVal(bv.value, module, stmt.span, names[0])
            return
        failed = bool(results) and all(isinstance(r, Poison) for r in results)  # the call said why
        if len(names) > len(results) and not failed:
            self.error("E0210", f"{len(names)} names but the right side gives {len(results)} value{'s' if len(results) != 1 else ''}",
                       stmt.targets[len(results)].span)
            results = results + [POISON] * (len(names) - len(results))
        for tgt, val in zip(stmt.targets, results):
            if isinstance(val, TensorVal):
                val = TensorVal(val.ref, val.type, stmt.span, tgt.name)
            elif isinstance(val, ConstVal):
                self.error("E0206", f"`{tgt.name}` would be a constant; use `param {tgt.name} = ...` for constants", stmt.span)
                val = POISON
            scope.names[tgt.name] = val

    def output(self, stmt: ir.Output, scope: Scope, prog: Program) -> None:
        val = scope.names.get(stmt.name)
        if val is None:
            self.error("E0212", f"output `{stmt.name}` is not defined", stmt.span,
                       help=did_you_mean(stmt.name, [k for k, v in scope.names.items() if isinstance(v, TensorVal)]))
            return
        if isinstance(val, Poison):
            return
        if not isinstance(val, TensorVal):
            self.error("E0206", f"output `{stmt.name}` is not a tensor", stmt.span)
            return
        if stmt.name in prog.outputs:
            self.error("E0203", f"output `{stmt.name}` is declared twice", stmt.span)
            return
        prog.outputs[stmt.name] = val.ref
        if stmt.shape is None:
            return
        want = self.declared_type(stmt, scope)
        if isinstance(want, Poison):
            return
        actual = self.env.resolve_type(val.type)
        shown_want = self._show_decl(want)
        ok = self._unify_types(actual, want)
        if not ok:
            d = self.error("E0304", f"output `{stmt.name}` does not have its declared shape", stmt.shape.span,
                           label=f"expected {shown_want}, found {actual}")
            self.explain(d, val)
        elif stmt.dtype is not None and actual.dtype != stmt.dtype:
            d = self.error("E0304", f"output `{stmt.name}` does not have its declared dtype", stmt.span,
                           label=f"expected {stmt.dtype}, found {actual.dtype}")
            self.explain(d, val)

    def repeat(self, stmt: ir.Repeat, scope: Scope, prog: Program) -> None:
        n = self.const(stmt.count, scope)
        if isinstance(n, Poison):
            return
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            self.error("E0207", f"`repeat` needs a non-negative integer count, found {n!r}", stmt.count.span)
            return
        if n > MAX_REPEAT:
            self.error("E0801", f"`repeat {n}` exceeds the limit of {MAX_REPEAT} copies", stmt.count.span)
            return
        unrolled = n * _assignments(stmt.body)  # a lower bound: refuse before unrolling, not after
        if self.count + unrolled > MAX_NODES:
            self.error("E0801", f"`repeat {n}` unrolls to at least {unrolled:,} statements; the limit is "
                       f"{MAX_NODES:,} after unrolling", stmt.count.span)
            return
        saved = scope.consts.get(stmt.var) if stmt.var else None
        same_copies = not _mentions(stmt.body, stmt.var)
        for i in range(n):
            if stmt.var:
                scope.consts[stmt.var] = i
            before, start = len(self.diags), self.count
            self.body(stmt.body, scope, prog, inputs=None)
            if len(self.diags) > before:
                break  # the same mistake in every copy is reported once
            if i == 0 and same_copies and self._too_many_copies(stmt, n, self.count - start):
                break
        if stmt.var:
            if saved is None:
                scope.consts.pop(stmt.var, None)
            else:
                scope.consts[stmt.var] = saved

    def _too_many_copies(self, stmt: ir.Repeat, n: int, per_copy: int) -> bool:
        """After the first copy of a body that does not read its index (so every copy is the same
        size, block calls included), refuse the rest if they would pass the statement limit."""
        if self.count + (n - 1) * per_copy <= MAX_NODES:
            return False
        self.error("E0801", f"`repeat {n}` unrolls to {n * per_copy:,} statements ({per_copy:,} a copy, block "
                   f"calls included); the limit is {MAX_NODES:,} after unrolling", stmt.count.span)
        self.count = MAX_NODES + 1  # the limit is reported: later statements are not elaborated
        return True

    # ------------------------------------------------------------------ expressions

    def tensor_expr(self, expr: Any, scope: Scope, prog: Program, var: str | None = None) -> Value:
        if isinstance(expr, ir.Name):
            if expr.id in scope.names:
                return scope.names[expr.id]
            if expr.id in scope.consts:
                return ConstVal(scope.consts[expr.id], expr.span)
            size = self.size_value(expr.id, scope)
            if size is not None:  # a dim of the inputs used as a value: its size at run time
                return ConstVal(size, expr.span)
            if self.unread_size(expr.id):
                return POISON
            choices = list(scope.names) + list(scope.consts)
            d = self.error("E0201", f"unknown name `{expr.id}`", expr.span, help=did_you_mean(expr.id, choices))
            self._in_block_note(d, scope)
            return POISON
        if isinstance(expr, ir.Call):
            res = self.call(expr, scope, prog, var=var, n_targets=1)
            return res[0] if res else POISON
        if isinstance(expr, (ir.Num, ir.Bool)):
            return ConstVal(expr.value, expr.span)
        if isinstance(expr, ir.BinOp):
            return self.binop(expr, scope, prog, var)
        if isinstance(expr, ir.Index):
            return self.index(expr, scope, prog, var)
        if isinstance(expr, ir.UnaryOp):
            v = self.tensor_expr(expr.operand, scope, prog, var)
            if isinstance(v, ConstVal):
                c = self.const(expr, scope)
                return POISON if isinstance(c, Poison) else ConstVal(c, expr.span)
            if not isinstance(v, TensorVal):
                return self.not_tensor(v, expr.operand)
            if expr.op == "+":
                return v
            node = prog.add(PNode(prog.unique(var or "neg"), "unary", "neg", expr.span, args=[v.ref], types=[v.type], var=var))
            return TensorVal(Ref(node.name), v.type, expr.span, None)
        if isinstance(expr, ir.ListExpr):
            self.error("E0206", "a list is not a tensor", expr.span,
                       help="functions take their tensors as separate arguments: cat(a, b, dim=1), not cat([a, b])")
            return POISON
        self.error("E0206", "expected a tensor expression", expr.span)
        return POISON

    def index(self, expr: ir.Index, scope: Scope, prog: Program, var: str | None) -> Value:
        """``x[...]``: basic indexing as in torch, with a static result shape."""
        base = self.tensor_expr(expr.value, scope, prog)
        if not isinstance(base, TensorVal):
            return self.not_tensor(base, expr.value)
        key: list[Any] = []
        for item in expr.items:
            part = self.subscript(item, scope)
            if isinstance(part, Poison):
                return POISON
            key.append(part)
        t = self.env.resolve_type(base.type)
        out = self.index_type(t, key, expr)
        if out is None:
            return POISON
        name = prog.unique(var or "index")
        subscript = "[" + ", ".join(subscript_text(item) for item in expr.items) + "]"
        prog.add(PNode(name, "index", subscript, expr.span, args=[base.ref], key=tuple(key), types=[out], var=var))
        return TensorVal(Ref(name), out, expr.span, None)

    def subscript(self, item: Any, scope: Scope) -> Any:
        """One subscript item as ``operator.getitem`` takes it: an int or a size, a slice, ``...``."""
        if isinstance(item, ir.Ellipsis_):
            return Ellipsis
        if isinstance(item, ir.Slice):
            parts = [None if p is None else self.index_value(p, scope) for p in (item.start, item.stop, item.step)]
            if any(isinstance(p, Poison) for p in parts):
                return POISON
            if parts[2] is not None and not (isinstance(parts[2], int) and parts[2] > 0):
                self.error("E0307", f"a slice step must be a positive integer, found {parts[2]}", item.step.span)  # type: ignore[union-attr]
                return POISON
            return slice(*parts)
        return self.index_value(item, scope)

    def index_value(self, e: Any, scope: Scope) -> Any:
        if isinstance(e, ir.Name) and isinstance(scope.names.get(e.id), TensorVal):
            self.error("E0206", f"`{e.id}` is a tensor: indexing by a tensor is a function", e.span,
                       help=f"index_select(x, dim, {e.id}) picks whole rows; gather(x, dim, {e.id}) one element each")
            return POISON
        v = self.const(e, scope)
        if isinstance(v, Poison):
            return POISON
        if isinstance(v, bool) or not isinstance(v, (int, Sym)):
            self.error("E0207", f"an index must be an integer or a size, found {v!r}", e.span)
            return POISON
        return v

    def index_type(self, t: TensorType, key: list[Any], expr: ir.Index) -> TensorType | None:
        """The type of ``t[key]``; a diagnostic (and None) for an index that cannot hold."""
        if key.count(Ellipsis) > 1:
            self.error("E0307", "an index may hold one `...`", expr.span)
            return None
        if Ellipsis in key:
            at = key.index(Ellipsis)
            before, after = key[:at], key[at + 1:]
        else:
            before, after = key, []
        dims = list(t.shape)
        if not t.variadic and len(before) + len(after) > len(dims):
            self.error("E0303", f"{len(before) + len(after)} indices for a tensor of rank {len(dims)}", expr.span,
                       label=f"`{ir_text(expr.value)}` is {t}")
            return None
        if t.variadic and Ellipsis not in key:  # indexing the unknown leading dims: the known ones stay
            return t
        if t.variadic:
            head: list[Any] = []
            tail_src = dims[len(dims) - len(after):] if after else []
            rest = dims[: len(dims) - len(after)]
        else:
            head_src, rest = dims[: len(before)], dims[len(before): len(dims) - len(after)]
            head = []
            for d, k in zip(head_src, before, strict=True):
                r = self.index_dim(d, k, expr, t)
                if r is POISON:
                    return None
                head.extend(r)
            tail_src = dims[len(dims) - len(after):] if after else []
        tail: list[Any] = []
        for d, k in zip(tail_src, after, strict=True):
            r = self.index_dim(d, k, expr, t)
            if r is POISON:
                return None
            tail.extend(r)
        return TensorType(tuple(head + rest + tail), t.dtype, t.variadic, f"`{ir_text(expr)}` of {t}")

    def index_dim(self, d: Any, k: Any, expr: ir.Index, t: TensorType) -> Any:
        """What one dim becomes: [] (an index removes it) or [length] (a slice)."""
        if not isinstance(k, slice):
            if isinstance(k, int) and isinstance(d, int) and not -d <= k < d:
                self.error("E0307", f"index {k} is out of range for a dim of size {d}", expr.span,
                           label=f"`{ir_text(expr.value)}` is {t}")
                return POISON
            return []
        step = k.step or 1
        if isinstance(d, int):
            for bound in (k.start, k.stop):
                # torch clamps such a bound silently; on a fixed dim it is a mistake (pos[:130] on 128 rows)
                if isinstance(bound, int) and not -d <= bound <= d:
                    self.error("E0307", f"slice bound {bound} is out of range for a dim of size {d}", expr.span,
                               label=f"`{ir_text(expr.value)}` is {t}",
                               help=f"a bound lies in -{d}..{d}; leave it out to run to the end")
                    return POISON
        if isinstance(d, int) and all(isinstance(p, int) or p is None for p in (k.start, k.stop)):
            return [len(range(d)[k])]
        start = 0 if k.start is None else (dim_add(d, k.start) if isinstance(k.start, int) and k.start < 0 else k.start)
        stop = d if k.stop is None else (dim_add(d, k.stop) if isinstance(k.stop, int) and k.stop < 0 else k.stop)
        if isinstance(k.stop, Sym) and isinstance(d, int):
            known = self.env.resolve(k.stop)
            if isinstance(known, int) and known > d:
                self.error("E0307", f"the slice reads past the {d} entries of this dim ({k.stop} = {known})",
                           expr.span, label=f"`{ir_text(expr.value)}` is {t}")
                return POISON
            if not isinstance(known, int):
                self.pending_bounds.append(SizeBound(k.stop, d, f"`{ir_text(expr)}` (line {expr.span.line}) "
                                                     f"reads at most the {d} entries of its dim", expr.span))
        length = dim_add(stop, dim_mul(start, -1))
        if step != 1:
            length = length // step + (1 if length % step else 0) if isinstance(length, int) else self.env.fresh("L")
        return [length]

    def not_tensor(self, v: Value, expr: Any) -> Poison:
        if isinstance(v, Poison):
            return POISON
        what = {
            ConstVal: "a constant",
            InstanceVal: "a block value (call it with tensors)",
            BlockValueVal: "a block value (call it with tensors)",
        }.get(type(v), "not a tensor")
        self.error("E0206", f"expected a tensor, found {what}", expr.span)
        return POISON

    def binop(self, expr: ir.BinOp, scope: Scope, prog: Program, var: str | None) -> Value:
        a = self.tensor_expr(expr.left, scope, prog)
        b = self.tensor_expr(expr.right, scope, prog)
        if isinstance(a, Poison) or isinstance(b, Poison):
            return POISON
        if isinstance(a, ConstVal) and isinstance(b, ConstVal):
            c = self.const(expr, scope)
            return POISON if isinstance(c, Poison) else ConstVal(c, expr.span)
        for v, e in ((a, expr.left), (b, expr.right)):
            if not isinstance(v, (TensorVal, ConstVal)):
                return self.not_tensor(v, e)
            if isinstance(v, ConstVal) and (not isinstance(v.value, (int, float, Sym)) or isinstance(v.value, bool)):
                self.error("E0206", f"cannot use {v.value!r} in tensor arithmetic", e.span)
                return POISON
        if expr.op not in ("+", "-", "*", "/", "//", "%", "**", "@", *ir.COMPARISONS):
            self.error("E0206", f"operator `{expr.op}` is not defined on tensors", expr.span,
                       help="tensors take + - * / // % ** @ and the comparisons")
            return POISON
        if expr.op == "@" and (isinstance(a, ConstVal) or isinstance(b, ConstVal)):
            self.error("E0206", "`@` needs tensors on both sides", expr.span)
            return POISON
        t = self.binop_type(expr, a, b)
        if t is None:
            return POISON
        args = [a.ref if isinstance(a, TensorVal) else a.value, b.ref if isinstance(b, TensorVal) else b.value]
        names = {"+": "add", "-": "sub", "*": "mul", "/": "div", "//": "floordiv", "%": "mod", "**": "pow",
                 "@": "matmul", "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
        node = prog.add(PNode(prog.unique(var or names[expr.op]), "binop", expr.op, expr.span, args=args, types=[t],
                              var=var))
        return TensorVal(Ref(node.name), t, expr.span, None)

    def binop_type(self, expr: ir.BinOp, a: Any, b: Any) -> TensorType | None:
        t = self._arith_type(expr, a, b)
        if t is not None and expr.op in ir.COMPARISONS:
            return t.with_dtype("bool")
        return t

    def _arith_type(self, expr: ir.BinOp, a: Any, b: Any) -> TensorType | None:
        if isinstance(a, ConstVal):
            tb = b.type
            return TensorType(tb.shape, "float" if isinstance(a.value, float) else tb.dtype, tb.variadic)
        if isinstance(b, ConstVal):
            ta = a.type
            return TensorType(ta.shape, "float" if isinstance(b.value, float) else ta.dtype, ta.variadic)
        ta, tb = self.env.resolve_type(a.type), self.env.resolve_type(b.type)
        try:
            if expr.op == "@":
                return self.matmul_type(ta, tb)
            t = broadcast(ta, tb, self.env)
            if expr.op == "/" and t.dtype != "float":
                t = t.with_dtype("float")
            return t
        except DimConflict:
            d = self.error("E0301", f"shapes of `{expr.op}` do not broadcast", expr.span,
                           label=f"{ta} {expr.op} {tb}")
            self.explain(d, a)
            self.explain(d, b)
            return None

    def matmul_type(self, ta: TensorType, tb: TensorType) -> TensorType:
        if (ta.rank == 0) or (tb.rank == 0):
            raise DimConflict(0, 1)
        if len(tb.shape) == 1 and not tb.variadic:
            self.env.unify(ta.shape[-1], tb.shape[0])
            return TensorType(ta.shape[:-1], ta.dtype, ta.variadic)
        if len(ta.shape) == 1 and not ta.variadic:
            self.env.unify(ta.shape[0], tb.shape[-2])
            return TensorType(tb.shape[:-2] + tb.shape[-1:], tb.dtype, tb.variadic)
        self.env.unify(ta.shape[-1], tb.shape[-2])
        batch = broadcast(TensorType(ta.shape[:-2], ta.dtype, ta.variadic), TensorType(tb.shape[:-2], tb.dtype, tb.variadic), self.env)
        return TensorType(batch.shape + (ta.shape[-2], tb.shape[-1]), ta.dtype, batch.variadic)

    # ------------------------------------------------------------------ calls

    def call(self, expr: ir.Call, scope: Scope, prog: Program, var: str | None, n_targets: int) -> list[Value]:
        fspan = expr.func_span if expr.func_span.known else expr.span
        local = scope.names.get(expr.func)
        if isinstance(local, InstanceVal):
            return self.instance_call(expr, local, scope, prog, var)
        if local is not None and not isinstance(local, Poison):
            self.error("E0206", f"`{expr.func}` is a tensor, not a block", fspan)
            return [POISON] * n_targets
        if isinstance(local, Poison):
            return [POISON] * n_targets
        if expr.func in self.res.blocks:
            return self.user_call(expr, self.res.blocks[expr.func], scope, prog, var, n_targets)
        decl = self.registry.get(expr.func)
        if decl is None:
            choices = list(self.registry) + list(self.res.blocks) + [k for k, v in scope.names.items() if isinstance(v, InstanceVal)]
            d = self.error("E0201", f"unknown block or function `{expr.func}`", fspan,
                           help=did_you_mean(expr.func, choices) or "`dsl blocks` lists the blocks and functions")
            self._in_block_note(d, scope)
            for a in expr.args:  # still check the arguments
                self.tensor_expr(a, scope, prog)
            return [POISON] * n_targets
        return self.decl_call(expr, decl, scope, prog, var)

    def split_kwargs(self, expr: ir.Call, decl: Decl) -> tuple[dict[str, ir.Keyword], dict[str, ir.Keyword]]:
        tensors: dict[str, ir.Keyword] = {}
        hyper: dict[str, ir.Keyword] = {}
        for kw in expr.kwargs:
            if kw.name in tensors or kw.name in hyper:
                self.error("E0202", f"argument `{kw.name}` given twice", kw.span)
                continue
            (tensors if decl.input(kw.name) is not None else hyper)[kw.name] = kw
        return tensors, hyper

    def decl_call(self, expr: ir.Call, decl: Decl, scope: Scope, prog: Program, var: str | None) -> list[Value]:
        n_out = len(decl.outputs)
        tensor_kws, hyper_kws = self.split_kwargs(expr, decl)
        tensor_args, ok = self.positional_hyper(expr, decl, hyper_kws)
        if not tensor_args and not tensor_kws and decl.kind == "block" and decl.inputs:
            params = self.validate_params(decl, hyper_kws, expr, scope, prog) if ok else POISON
            if isinstance(params, Poison):
                return [POISON]
            return [BlockValueVal(DeclValue(decl, params), expr.span)]
        # the tensors first: `tie=emb` may name an instance first called in them (`Linear(emb(t), tie=emb)`)
        inputs, spans, values, inputs_ok = self.bind_inputs(expr, decl, tensor_args, tensor_kws, scope, prog)
        params = self.validate_params(decl, hyper_kws, expr, scope, prog) if ok else POISON
        if not inputs_ok or isinstance(params, Poison):
            return [POISON] * n_out
        call = ShapeCall(decl.name, {k: v.type for k, v in inputs.items()}, self.env, describe_params(params))
        try:
            out_types = decl.infer(call, params)
        except ShapeError as e:
            self.shape_error(e, decl.name, expr, spans, values, scope)
            return [POISON] * n_out
        except Exception as e:  # a faulty shape rule must not crash the checker
            self.error("E0301", f"shape rule of `{decl.name}` failed: {type(e).__name__}: {e}", expr.span)
            return [POISON] * n_out
        out_types = [self.env.resolve_type(t) for t in out_types]
        name = prog.unique(var or decl.name.lower())
        args, kwargs = self.arrange_args(decl, inputs)
        node = PNode(name, decl.kind, decl.name, expr.span, args=args, kwargs=kwargs, decl=decl,
                     params=params, types=out_types, var=var)
        if decl.kind == "block":
            node.module = name
            tie = getattr(params, "tie", None)
            prog.modules[name] = ModuleSpec("decl", expr.span, decl=decl, params=params,
                                            in_types={k: v.type for k, v in inputs.items()}, out_types=out_types,
                                            tie=tie.module if isinstance(tie, InstanceRef) else None)
        prog.add(node)
        self.record_aux(decl, params, node, prog)
        return [TensorVal(Ref(name, i), t, expr.span, None) for i, t in enumerate(out_types)]

    def record_aux(self, decl: Decl, params: Any, node: PNode, prog: Program) -> None:
        for aux in decl.aux:
            if aux.output not in decl.outputs:
                continue
            weight = aux.weight if not isinstance(aux.weight, str) else float(getattr(params, aux.weight))
            prog.aux.append(AuxEntry(f"aux:{node.name}.{aux.output}", Ref(node.name, decl.outputs.index(aux.output)), float(weight)))

    def arrange_args(self, decl: Decl, inputs: dict[str, TensorVal]) -> tuple[list[Any], dict[str, Ref]]:
        if decl.inputs and decl.inputs[0].variadic:
            refs = [v.ref for v in inputs.values()]
            return [refs], {}
        args: list[Any] = []
        kwargs: dict[str, Ref] = {}
        for a in decl.inputs:
            if a.name not in inputs:
                continue
            if a.optional:
                kwargs[a.name] = inputs[a.name].ref
            else:
                args.append(inputs[a.name].ref)
        return args, kwargs

    def positional_hyper(self, expr: ir.Call, decl: Decl,
                         hyper: dict[str, ir.Keyword]) -> tuple[list[tuple[str, ir.Expr]], bool]:
        """Split the positional arguments into tensors (returned, with the input each binds)
        and hyperparameters (added to ``hyper``), in the order ``decl.positional_names`` gives."""
        if decl.inputs and decl.inputs[0].variadic:
            return [(f"{decl.inputs[0].name}{i}", a) for i, a in enumerate(expr.args)], True
        names = decl.positional_names
        if len(expr.args) > len(names):
            extra = expr.args[len(names)]
            n_tensors = len(decl.required_inputs)
            self.error("E0202", f"`{decl.name}` takes {len(names)} positional argument{'s' if len(names) != 1 else ''}"
                       + (f" ({n_tensors} tensor{'s' if n_tensors != 1 else ''})" if n_tensors != len(names) else "")
                       + f", found {len(expr.args)}", extra.span, help=self.signature_help(decl))
            return [], False
        tensors: list[tuple[str, ir.Expr]] = []
        ok = True
        for name, arg in zip(names, expr.args, strict=False):
            if decl.input(name) is not None:
                tensors.append((name, arg))
            elif name in hyper:
                self.error("E0202", f"`{name}` given both by position and by keyword", hyper[name].span)
                ok = False
            else:
                hyper[name] = ir.Keyword(name=name, value=arg, span=arg.span)
        return tensors, ok

    def bind_inputs(self, expr: ir.Call, decl: Decl, tensor_args: list[tuple[str, ir.Expr]],
                    tensor_kws: dict[str, ir.Keyword], scope: Scope, prog: Program):
        inputs: dict[str, TensorVal] = {}
        spans: dict[str, Span] = {}
        values: dict[str, Any] = {}
        ok = True
        variadic = bool(decl.inputs) and decl.inputs[0].variadic
        positional = [a for a in decl.inputs if not a.optional]
        fspan = expr.func_span if expr.func_span.known else expr.span
        pairs = list(tensor_args)
        if variadic and not pairs:
            self.error("E0202", f"`{decl.name}` needs at least one tensor", expr.span)
            ok = False
        for kname, kw in tensor_kws.items():
            if any(n == kname for n, _ in pairs):
                self.error("E0202", f"tensor `{kname}` given both by position and by keyword", kw.span)
                ok = False
                continue
            pairs.append((kname, kw.value))
        given = {n for n, _ in pairs}
        if not variadic:
            missing = [a.name for a in positional if a.name not in given]
            if missing:
                self.error("E0202", f"`{decl.name}` is missing tensor argument{'s' if len(missing) > 1 else ''} "
                           + ", ".join(f"`{m}`" for m in missing), fspan, help=self.signature_help(decl))
                ok = False
        for name, e in pairs:
            v = self.tensor_expr(e, scope, prog)
            spans[name] = e.span
            values[name] = v
            if isinstance(v, TensorVal):
                inputs[name] = v
            else:
                if not isinstance(v, Poison):
                    self.not_tensor(v, e)
                ok = False
        return inputs, spans, values, ok

    def signature_help(self, decl: Decl) -> str:
        req = ", ".join(a.name for a in decl.inputs if not a.optional)
        opt = ", ".join(f"{a.name}=..." for a in decl.inputs if a.optional)
        fields = ", ".join(f"{k}=..." for k, f in decl.params.model_fields.items() if f.is_required())
        parts = [p for p in (req, opt, fields) if p]
        return f"usage: {decl.name}({', '.join(parts)})" + (f"  {decl.signature}" if decl.signature else "")

    def hyper_value(self, kw: ir.Keyword, scope: Scope, prog: Program, accepts_instance: bool = False) -> Any:
        e = kw.value
        if isinstance(e, ir.Call) and not e.args and (_is_block_name(e.func) or isinstance(scope.names.get(e.func), InstanceVal)):
            res = self.call(e, scope, prog, var=None, n_targets=1)
            v = res[0] if res else POISON
            if isinstance(v, BlockValueVal):
                return v.value
            if isinstance(v, Poison):
                return POISON
            self.error("E0206", f"`{kw.name}` expects a block value", e.span)
            return POISON
        if isinstance(e, ir.Name) and isinstance(scope.names.get(e.id), InstanceVal):
            inst: InstanceVal = scope.names[e.id]  # type: ignore[assignment]
            if not accepts_instance:
                return inst.value
            if inst.first_inputs is None:
                self.error("E0206", f"`{kw.name}={e.id}`: `{e.id}` has no weights yet", e.span,
                           help=f"call `{e.id}` before this line, e.g. `{e.id}(tokens)`")
                return POISON
            return InstanceRef(e.id, inst.module, inst.value, inst.first_inputs)
        if isinstance(e, ir.Name) and isinstance(scope.names.get(e.id), TensorVal):
            if accepts_instance:  # tie=: a named block whose weights are shared
                self.error("E0207", f"`{kw.name}` names a block instance, but `{e.id}` is a tensor", e.span,
                           help=f"name the block and call it: `emb = Embedding(num=..., dim=...)`, "
                                f"`h = emb(tokens)`, then `{kw.name}=emb`")
            else:
                self.error("E0207", f"`{kw.name}` needs a constant, but `{e.id}` is a tensor", e.span)
            return POISON
        return self.const(e, scope)

    def validate_params(self, decl: Decl, hyper: dict[str, ir.Keyword], expr: ir.Call, scope: Scope, prog: Program) -> Any:
        data: dict[str, Any] = {}
        bad = False
        fields = decl.params.model_fields
        for name, kw in hyper.items():
            field = fields.get(name)
            v = self.hyper_value(kw, scope, prog, accepts_instance=field is not None and _accepts(field.annotation, InstanceRef))
            if isinstance(v, Poison):
                bad = True
            else:
                # A block's weights need concrete sizes: a size known here is its number.
                data[name] = self.env.resolve_value(v) if decl.kind == "block" else v
        for name, kw in hyper.items():
            if name not in fields:
                choices = list(fields) + [a.name for a in decl.inputs]
                self.error("E0402", f"`{decl.name}` has no hyperparameter `{name}`", kw.span,
                           help=did_you_mean(name, choices) or (f"its hyperparameters: {', '.join(fields)}" if fields else f"`{decl.name}` takes no hyperparameters"))
                bad = True
                data.pop(name, None)
        if bad:
            return POISON
        try:
            return decl.params.model_validate(data, strict=True)
        except ValidationError as err:
            fspan = expr.func_span if expr.func_span.known else expr.span
            for e in err.errors():
                field_name = str(e["loc"][0]) if e["loc"] else ""
                kw = hyper.get(field_name)
                if e["type"] == "missing":
                    self.error("E0403", f"`{decl.name}` needs hyperparameter `{field_name}`", fspan,
                               help=self.signature_help(decl))
                    continue
                info = fields.get(field_name)
                expected = _annotation_text(info.annotation) if info is not None and e["type"] != "value_error" else ""
                got = data.get(field_name)
                if _has_size(got):
                    self.error("E0601", f"`{field_name}={got}` of `{decl.name}` needs the size {got}, which is unknown "
                               "when the model is built", kw.value.span if kw is not None else fspan,
                               help=f"give it with --dim {_first_symbol(got)}=... or dims={{...}}, or bind it from "
                               "the train section's data")
                    continue
                what = f"invalid value for `{field_name}` of `{decl.name}`" if field_name else f"invalid hyperparameters of `{decl.name}`"
                wrong_type = e["type"].endswith(("_type", "_parsing"))  # not a bound (gt=0) on the right type
                found = f" (expected {expected}, found {_kind(got)} {got!r})" if expected and wrong_type else \
                    f", got {got!r}" if got is not None else ""
                self.error("E0401", what, kw.value.span if kw is not None else fspan,
                           label=_pydantic_message(e["msg"]) + found)
            return POISON
        except Exception as exc:
            self.error("E0401", f"invalid hyperparameters for `{decl.name}`: {exc}", expr.span)
            return POISON

    def shape_error(self, e: ShapeError, block: str, expr: ir.Call, spans: dict[str, Span], values: dict[str, Any], scope: Scope) -> None:
        span = spans.get(e.arg or "", None)
        if span is None and e.arg:
            kw = next((k for k in expr.kwargs if k.name == e.arg), None)
            span = kw.span if kw is not None else None
        if span is None:
            span = expr.span
        d = self.error(e.code, e.message, span, label=e.label, help=e.help)
        if e.arg in values:
            self.explain(d, values[e.arg])
        self._in_block_note(d, scope)

    # ------------------------------------------------------------------ block values and user blocks

    def instance_call(self, expr: ir.Call, inst: InstanceVal, scope: Scope, prog: Program, var: str | None) -> list[Value]:
        if expr.kwargs:
            self.error("E0209", f"`{inst.var}` is a block instance: give hyperparameters where it is defined", expr.kwargs[0].span)
        if isinstance(inst.value, DeclValue) and not any(a.variadic for a in inst.value.decl.inputs):
            n = len(inst.value.decl.inputs)
            if len(expr.args) > n:
                self.error("E0202", f"`{inst.var}` takes {n} tensor argument{'s' if n != 1 else ''}, found {len(expr.args)}",
                           expr.args[n].span, help=self.signature_help(inst.value.decl))
                return [POISON]
        vals = [self.tensor_expr(a, scope, prog) for a in expr.args]
        if any(not isinstance(v, TensorVal) for v in vals):
            for v, a in zip(vals, expr.args):
                if not isinstance(v, TensorVal):
                    self.not_tensor(v, a)
            return [POISON]
        types = [self.env.resolve_type(v.type) for v in vals]  # type: ignore[union-attr]
        if inst.first_inputs is not None:
            for t0, t, a in zip(inst.first_inputs, types, expr.args):
                if t0.shape and t.shape:
                    try:
                        self.env.unify(t0.shape[-1], t.shape[-1])
                    except DimConflict:
                        d = self.error("E0301", f"shared block `{inst.var}` was first called with features {dim_str(t0.shape[-1])}, here {dim_str(t.shape[-1])}",
                                       a.span, label=f"expected [..., {dim_str(t0.shape[-1])}], found {t}")
                        d.note(f"`{inst.var}` is one instance with one set of weights", inst.span)
                        return [POISON]
        call = ShapeCall(inst.value.name, {}, self.env)
        try:
            outs = inst.value.infer(call, types)
        except ShapeError as e:
            spans = {}
            self.shape_error(e, inst.value.name, expr, spans, {}, scope)
            return [POISON]
        except ValueError as e:
            self.error("E0202", str(e), expr.span)
            return [POISON]
        outs = [self.env.resolve_type(t) for t in outs]
        if inst.first_inputs is None:
            inst.first_inputs = types
            prog.modules[inst.module] = ModuleSpec("value", inst.span, value=inst.value,
                                                   in_types={str(i): t for i, t in enumerate(types)}, out_types=outs)
        name = prog.unique(var or inst.var)
        prog.add(PNode(name, "block", inst.value.name, expr.span, args=[v.ref for v in vals], types=outs,  # type: ignore[union-attr]
                       module=inst.module, var=var))
        return [TensorVal(Ref(name, i), t, expr.span, None) for i, t in enumerate(outs)]

    def user_call(self, expr: ir.Call, bdef: ir.BlockDef, scope: Scope, prog: Program, var: str | None, n_targets: int) -> list[Value]:
        consts = self.block_args(bdef, expr.kwargs, expr, scope)
        if not expr.args:
            if consts is None:
                return [POISON]
            return [BlockValueVal(UserBlockValue(self, bdef, consts, expr.span), expr.span)]
        vals = [self.tensor_expr(a, scope, prog) for a in expr.args]
        n_in = len(bdef.inputs)
        if len(vals) != n_in:
            fspan = expr.func_span if expr.func_span.known else expr.span
            self.error("E0202", f"`{bdef.name}` takes {n_in} tensor argument{'s' if n_in != 1 else ''}, found {len(vals)}", fspan,
                       help=f"`{bdef.name}` declares inputs " + ", ".join(f"`{i.name}`" for i in bdef.inputs))
            return [POISON] * max(n_targets, len(bdef.outputs))
        good: list[TensorVal | Poison] = []
        for v, a in zip(vals, expr.args):
            if isinstance(v, TensorVal):
                good.append(TensorVal(v.ref, v.type, v.span, v.var, use_span=a.span))
            else:
                if not isinstance(v, Poison):
                    self.not_tensor(v, a)
                good.append(POISON)
        if consts is None:
            return [POISON] * max(n_targets, len(bdef.outputs))
        sub = self.instantiate(bdef, consts, good, expr.span)
        if sub is None:
            return [POISON] * max(n_targets, len(bdef.outputs))
        name = prog.unique(var or bdef.name.lower())
        self.lift_aux(sub, name, prog)
        outs = [sub.type_of(r) for r in sub.outputs.values()]
        prog.modules[name] = ModuleSpec("user", expr.span, program=sub, out_types=outs)
        refs = [v.ref for v in good if isinstance(v, TensorVal)]
        prog.add(PNode(name, "user", bdef.name, expr.span, args=list(refs), types=outs, module=name, var=var))
        n_user = len(outs) - len(sub.aux)
        return [TensorVal(Ref(name, i), t, expr.span, None) for i, t in enumerate(outs[:n_user])]

    def lift_aux(self, sub: Program, node: str, prog: Program) -> None:
        """A user block's auxiliary losses become extra outputs of its graph, after its own."""
        for a in sub.aux:
            sub.outputs[a.key] = a.ref
            idx = list(sub.outputs).index(a.key)
            prog.aux.append(AuxEntry(f"aux:{node}.{a.key[4:]}", Ref(node, idx), a.weight))

    def block_args(self, bdef: ir.BlockDef, kwargs: Sequence[ir.Keyword], expr: ir.Call, scope: Scope) -> dict[str, Const] | None:
        declared = {p.name: p for p in bdef.params}
        values: dict[str, Const] = {}
        ok = True
        for kw in kwargs:
            if kw.name not in declared:
                self.error("E0209", f"`{bdef.name}` has no param `{kw.name}`", kw.span,
                           help=did_you_mean(kw.name, declared) or (f"its params: {', '.join(declared)}" if declared else f"`{bdef.name}` takes no params"))
                ok = False
                continue
            v = self.const(kw.value, scope)
            if isinstance(v, Poison):
                ok = False
                continue
            try:
                values[kw.name] = coerce(v, declared[kw.name].type, kw.value.span, f"param `{kw.name}` of `{bdef.name}`")
            except ConstError as e:
                self.error(e.code, e.message, e.span)
                ok = False
        base = {k: v.value for k, v in self.res.params.items()}
        for p in bdef.params:
            if p.name in values:
                continue
            if p.default is None:
                fspan = expr.func_span if expr.func_span.known else expr.span
                self.error("E0403", f"`{bdef.name}` needs param `{p.name}`", fspan, help=f"{bdef.name}(..., {p.name}=...)")
                ok = False
                continue
            v = self.const(p.default, Scope(consts={**base, **values}))
            if isinstance(v, Poison):
                ok = False
                continue
            values[p.name] = v
        return values if ok else None

    def instantiate(self, bdef: ir.BlockDef, consts: dict[str, Const], args: list[TensorVal | Poison], call_span: Span) -> Program | None:
        if bdef.name in self.stack:
            self.error("E0205", f"block `{bdef.name}` uses itself: " + " -> ".join([*self.stack, bdef.name]), call_span)
            return None
        if len(self.stack) >= MAX_BLOCK_DEPTH:
            self.error("E0801", f"blocks nested deeper than {MAX_BLOCK_DEPTH}", call_span)
            return None
        base = {k: v.value for k, v in self.res.params.items()}
        scope = Scope(consts={**base, **consts}, symbols={}, block=bdef.name, call_span=call_span)
        sub = Program(name=bdef.name, env=self.env, span=bdef.name_span or bdef.span)
        self.stack.append(bdef.name)
        before = len(self.diags)
        self.body(bdef.body, scope, sub, inputs=list(args))
        self.stack.pop()
        if not sub.outputs:
            poisoned = any(isinstance(a, Poison) for a in args)  # already reported where the argument went wrong
            if len(self.diags) == before and not poisoned:
                self.error("E0212", f"block `{bdef.name}` has no `output`", bdef.name_span or bdef.span)
            return None
        if any(d.severity == "error" for d in self.diags[before:]):
            return None
        return sub


def _accepts(annotation: Any, cls: type) -> bool:
    """Whether a field annotation admits instances of ``cls`` (``X | None`` included)."""
    if annotation is cls:
        return True
    return any(_accepts(a, cls) for a in typing.get_args(annotation))


def _has_size(value: Any) -> bool:
    if isinstance(value, Sym):
        return True
    return isinstance(value, (list, tuple)) and any(_has_size(v) for v in value)


def _first_symbol(value: Any) -> str:
    if isinstance(value, Sym):
        return sorted(value.symbols)[0]
    return next(_first_symbol(v) for v in value if _has_size(v))


def _annotation_text(ann: Any) -> str:
    text = getattr(ann, "__name__", None) or str(ann)
    return text.replace("typing.", "").replace("NoneType", "null")


def _assignments(body: Sequence[Any]) -> int:
    """Assignments a body unrolls to, counting nested repeats with literal counts
    (others as one copy): a lower bound, so that a refusal based on it is sure."""
    total = 0
    for s in body:
        if isinstance(s, ir.Assign):
            total += 1
        elif isinstance(s, ir.Repeat):
            copies = s.count.value if isinstance(s.count, ir.Num) and isinstance(s.count.value, int) else 1
            total += max(copies, 0) * _assignments(s.body)
    return total


def _mentions(body: Sequence[Any], name: str | None) -> bool:
    """Whether any statement of ``body`` reads ``name`` (a repeat's index)."""
    if name is None:
        return False
    return any(isinstance(n, ir.Name) and n.id == name for s in body for n in s.walk())


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", list: "list", type(None): "null"}.get(type(v), type(v).__name__)
