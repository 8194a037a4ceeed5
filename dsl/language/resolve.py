"""Resolve: `use` imports, params with overrides, constant evaluation. Pure Python.

The resolver turns a parsed :class:`~dsl.language.ir.Spec` into a :class:`Resolved` spec:
every top-level and model param has a constant value (overrides applied and
type-checked), imported blocks and params are merged in, and import cycles are
diagnosed. Composite blocks, ``repeat`` and block values are elaborated by the
checker, which needs the argument shapes to do so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dsl.language import ir
from dsl.language.constants import Const, ConstError, coerce, eval_const
from dsl.language.diagnostics import NO_SPAN, Diagnostic, Span, did_you_mean
from dsl.language.errors import SpecError
from dsl.language.source import load

MAX_REPEAT = 10_000
MAX_USE_DEPTH = 32


@dataclass
class ParamValue:
    value: Const
    span: Span  # where it was defined (or overridden)
    origin: str = "spec"  # "spec" | "override" | "default"


@dataclass
class Resolved:
    spec: ir.Spec
    params: dict[str, ParamValue] = field(default_factory=dict)
    blocks: dict[str, ir.BlockDef] = field(default_factory=dict)
    model: ir.BlockDef | None = None
    model_args: dict[str, ParamValue] = field(default_factory=dict)
    train: ir.TrainSection | None = None
    sources: dict[str, str] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def constants(self) -> dict[str, Const]:
        out = {k: v.value for k, v in self.params.items()}
        out.update({k: v.value for k, v in self.model_args.items()})
        return out


def parse_override(text: str) -> Const:
    """The value of ``--set k=v``: a constant in the text language; a bare word is a string."""
    from dsl.language.text import parse_expr

    try:
        expr = parse_expr(text, file="<--set>")
    except Exception:
        return text
    if isinstance(expr, ir.Name):
        return expr.id
    try:
        return eval_const(expr, lambda n, s: n)
    except ConstError:
        return text



# --------------------------------------------------------------------------- imports


def _merge_imports(
    spec: ir.Spec, res: Resolved, stack: tuple[str, ...], loader: Callable[[str], ir.Spec], pending: list,
    merged: set[str],
) -> None:
    """Merge the definitions of every file ``spec`` uses, depth first.

    A file is read and merged once however often it is used (``merged`` holds the
    real paths done), so a file used twice by each of a chain of files costs one
    read per file, not one per path through the chain."""
    base = os.path.dirname(os.path.abspath(spec.file)) if spec.file not in ("<input>", "") else os.getcwd()
    for use in spec.uses:
        if "://" in use.path or use.path.startswith("\\\\"):
            res.diagnostics.append(
                Diagnostic("E0204", f"`use` takes a local file path, not a URL: {use.path!r}", use.span)
            )
            continue
        path = os.path.normpath(os.path.join(base, use.path))
        if path in stack:
            chain = " -> ".join(os.path.basename(p) for p in (*stack, path))
            res.diagnostics.append(Diagnostic("E0205", f"import cycle: {chain}", use.span))
            continue
        if len(stack) >= MAX_USE_DEPTH:
            res.diagnostics.append(Diagnostic("E0801", f"`use` nested deeper than {MAX_USE_DEPTH} files", use.span))
            continue
        if os.path.realpath(path) in merged:
            continue
        if not os.path.isfile(path):
            res.diagnostics.append(
                Diagnostic("E0702", f"cannot find `{use.path}`", use.span, label=f"looked for {path}")
            )
            continue
        try:
            sub = loader(path)
        except SpecError as exc:  # the imported file's own mistakes, reported in that file
            res.diagnostics.extend(exc.diagnostics)
            res.sources.update(exc.sources)
            continue
        merged.add(os.path.realpath(path))
        _merge_imports(sub, res, (*stack, path), loader, pending, merged)
        _collect_definitions(sub, res, pending, imported=True)


def _collect_definitions(spec: ir.Spec, res: Resolved, pending: list, imported: bool) -> None:
    for b in spec.blocks:
        if b.name in res.blocks and not imported:
            prev = res.blocks[b.name]
            res.diagnostics.append(
                Diagnostic("E0203", f"block `{b.name}` is defined twice", b.name_span or b.span).note(
                    "first defined here", prev.name_span or prev.span
                )
            )
        if imported:
            res.blocks.setdefault(b.name, b)
        else:
            res.blocks[b.name] = b
    pending.extend((p, imported) for p in spec.params)


# --------------------------------------------------------------------------- params


def _eval_params(res: Resolved, pending: list[tuple[ir.Param, bool]], overrides: Mapping[str, Any], used: set[str]) -> None:
    for p, imported in pending:
        if p.name in res.params and not imported and res.params[p.name].origin == "spec":
            res.diagnostics.append(Diagnostic("E0203", f"param `{p.name}` is defined twice", p.span))
            continue
        if p.name in overrides:
            used.add(p.name)
            res.params[p.name] = ParamValue(overrides[p.name], NO_SPAN, "override")
            continue
        try:
            value = eval_const(p.value, lambda n, s: _lookup_param(res, n, s))
        except ConstError as e:
            res.diagnostics.append(Diagnostic(e.code, e.message, e.span, help=e.help))
            continue
        res.params[p.name] = ParamValue(value, p.span)


def _lookup_param(res: Resolved, name: str, span: Span, extra: Mapping[str, ParamValue] | None = None) -> Const:
    if extra and name in extra:
        return extra[name].value
    if name in res.params:
        return res.params[name].value
    choices = list(res.params) + list(extra or {})
    raise ConstError(f"unknown param `{name}`", span, "E0201", help=did_you_mean(name, choices))


def _eval_model_args(res: Resolved, overrides: Mapping[str, Any], used: set[str]) -> None:
    model = res.model
    if model is None:
        return
    for decl in model.params:
        if decl.name in overrides:
            used.add(decl.name)
            try:
                res.model_args[decl.name] = ParamValue(
                    coerce(overrides[decl.name], decl.type, decl.span, f"param `{decl.name}`"), decl.span, "override"
                )
                continue
            except ConstError as e:
                res.diagnostics.append(
                    Diagnostic("E0404", f"invalid override for `{decl.name}`: {e.message}", decl.span)
                )
                if decl.default is None:
                    continue
                # go on with the default, so its uses are checked and not reported unknown
        elif decl.default is None:
            res.diagnostics.append(
                Diagnostic(
                    "E0403",
                    f"model param `{decl.name}` has no default and no value",
                    decl.span,
                    help=f"give it with --set {decl.name}=... or dsl.compile(spec, {decl.name}=...)",
                )
            )
            continue
        try:
            value = eval_const(decl.default, lambda n, s: _lookup_param(res, n, s, res.model_args))
            res.model_args[decl.name] = ParamValue(coerce(value, decl.type, decl.default.span, f"param `{decl.name}`"), decl.span, "default")
        except ConstError as e:
            res.diagnostics.append(Diagnostic(e.code, e.message, e.span, help=e.help))


def resolve(
    spec: ir.Spec,
    overrides: Mapping[str, Any] | None = None,
    loader: Callable[[str], ir.Spec] | None = None,
) -> Resolved:
    """Merge imports, evaluate params and model params with ``overrides`` applied."""
    overrides = dict(overrides or {})
    res = Resolved(spec=spec, model=spec.model, train=spec.train)
    root = os.path.abspath(spec.file) if spec.file not in ("<input>", "") else "<input>"
    pending: list[tuple[ir.Param, bool]] = []
    _merge_imports(spec, res, (root,), loader or load, pending, set())
    _collect_definitions(spec, res, pending, imported=False)
    used: set[str] = set()
    _eval_params(res, pending, overrides, used)
    _eval_model_args(res, overrides, used)
    for name in overrides:
        if name not in used:
            choices = list(res.params) + [p.name for p in (res.model.params if res.model else ())]
            res.diagnostics.append(
                Diagnostic(
                    "E0404",
                    f"`--set {name}=...` does not name a param of this spec",
                    Span(file=spec.file),
                    help=did_you_mean(name, choices) or (f"params: {', '.join(sorted(choices))}" if choices else None),
                )
            )
    if spec.model is None:
        res.diagnostics.append(
            Diagnostic("E0208", "no `model` in this spec", Span(file=spec.file, line=1, col=1, end_line=1, end_col=1),
                       help="a spec needs one `model Name(...) { ... }` (or `model:` in YAML)")
        )
    return res
