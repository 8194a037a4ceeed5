"""Hover text (markdown): a name's symbolic shape and dtype and where it came from;
a block's signature, shapes and paper; a hyperparameter's type, default and doc."""

from __future__ import annotations

import os

from dsl.language.diagnostics import Span
from dsl.tools.lsp.callees import Callee, model_callees, of_block, train_callees
from dsl.tools.lsp.index import Binding, Hit, Index, Shape

TENSORS = ("tensor", "input", "data field")


def hover_markdown(hit: Hit, index: Index) -> str | None:
    if hit.binding is not None:
        return _binding(hit.binding, index.file)
    if hit.keyword is not None and hit.func is not None:
        return _keyword(hit.func, hit.keyword, index)
    if hit.func is not None:
        return _callee(hit.func, hit.shapes, index)
    if hit.path is not None:
        exists = "" if os.path.isfile(hit.path) else " (not found)"
        return f"`use`: imports the params and blocks of `{hit.path}`{exists}"
    if hit.train_key is not None:
        from dsl.tools.schema import TRAIN_DOCS

        return f"`{hit.train_key}`: {TRAIN_DOCS.get(hit.train_key, 'not a train key')}"
    if hit.dim is not None:
        sizes = hit.shapes[0].sizes if hit.shapes else ""
        return f"`{hit.dim}`: a symbolic dim" + (f"; {sizes}" if sizes else " (its size is known when data flows)")
    return None


def _code(text: str) -> str:
    return f"```dsl\n{text}\n```"


def _where(span: Span, here: str) -> str:
    """``line 5`` in the same file, ``lib.dsl:5`` in another, as the checker's notes say it."""
    return f"line {span.line}" if span.file == here else f"{os.path.basename(span.file)}:{span.line}"


def _binding(b: Binding, here: str) -> str:
    if b.kind not in TENSORS:
        return _code(b.detail or f"{b.name}: {b.kind}")
    if not b.shapes:
        return _code(f"{b.name}: ?") + "\n\nNo type: its value did not check (see the error)."
    head = _code(f"{b.name}: {_typed(b.shapes[0])}" if len(b.shapes) == 1 else f"{b.name}: one type per call")
    return "\n\n".join([head, *(_because(b, s, here, several=len(b.shapes) > 1) for s in b.shapes)])


def _typed(s: Shape) -> str:
    """The shape with its dtype, ``float`` written out too."""
    return s.text if s.text.endswith(("long", "int", "bool")) else f"{s.text} float"


def _because(b: Binding, s: Shape, here: str, several: bool) -> str:
    where = _where(b.span, here)
    why = f" because {s.why}" if s.why else " as declared" if b.kind == "input" else ""
    text = f"`{b.name}` is {s.text}{why} ({where})"
    if several and s.call is not None:
        text = f"called at {_where(s.call, here)}: {text}"
    return text + (f"; {s.sizes}" if s.sizes else "")


def lookup_callee(func: str, index: Index) -> Callee | None:
    """The block, function or train function ``func`` names, user blocks first."""
    if func in index.blocks:
        return of_block(index.blocks[func])
    if index.model is not None and func == index.model.name:
        return of_block(index.model)
    return model_callees({}).get(func) or train_callees(None).get(func)


def _callee(func: str, shapes: list[Shape], index: Index) -> str | None:
    c = lookup_callee(func, index)
    if c is None:
        return None
    keyword = {"user block": "block ", "model": "model "}.get(c.kind, "")
    parts = [_code(keyword + c.signature), f"*{c.kind}*"
             + (f" · `{c.shapes}`" if c.shapes else "")]
    if shapes:
        parts.append("here: " + ", ".join(f"`{s.text}`" for s in shapes))
    if c.doc:
        parts.append(c.doc)
    if c.paper:
        parts.append(f"paper: {c.paper}")
    if c.where is not None:
        parts.append(f"defined at {_where(c.where, index.file)}")
    return "\n\n".join(parts)


def _keyword(func: str, name: str, index: Index) -> str | None:
    c = lookup_callee(func, index)
    p = c.param(name) if c is not None else None
    if c is None:
        return None
    if p is None:
        return None
    default = "required" if p.required else f"default {p.default}"
    return _code(f"{name}: {p.type}") + f"\n\n{default}, of `{func}`" + (f"\n\n{p.doc}" if p.doc else "")
