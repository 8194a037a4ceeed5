"""Completion on text that does not parse: you are in the middle of typing it.

A light tokenizer reads the text up to the cursor and says where the cursor is
(top level, a model or block body, the train section; a statement's start, an
expression, a call's arguments, a shape) and which call it is inside. The names
in scope come from the last analysis that succeeded and from the assignments
in the text itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lsprotocol import types

from dsl.checking.train.config import KEYS
from dsl.language.ir import DTYPES
from dsl.tools.lsp.callees import Callee, model_callees, train_callees
from dsl.tools.lsp.index import Binding, Index
from dsl.tools.schema import TRAIN_DOCS

TOP_KEYWORDS = ("param", "use", "block", "model", "train")
BODY_KEYWORDS = ("input", "output", "repeat")
PARAM_TYPES = ("int", "float", "bool", "str")
NAME_VALUE_KEYS = ("loss", "metrics", "early_stop")  # train values over the model's names
MAX_TEXT = 1_000_000  # characters before the cursor that completion reads (a spec of 5 MB gets none)

_TOKEN = re.compile(
    r"""(?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<num>\d+\.?\d*(?:[eE][+-]?\d+)?)
      | (?P<nl>\n)
      | (?P<op>\.\.\.|\*\*|//|[()\[\]{}=,:;+\-*/%@<>!.])
      | (?P<ws>[ \t\r\f]+)
      | (?P<other>.)""",
    re.VERBOSE,
)
Kind = types.CompletionItemKind


@dataclass
class Bracket:
    char: str  # ( [ {
    func: str | None = None  # the name before a `(`
    head: list[str] = field(default_factory=list)  # a `{`'s statement: ["model", "M"], ["train"]
    args: list[str] = field(default_factory=list)  # a `(`'s tokens since its last `,`
    given: set[str] = field(default_factory=set)  # keywords given in a `(`


@dataclass
class Context:
    """Where the cursor is, as far as the text before it says."""

    prefix: str = ""
    section: str = "top"  # top | block | model | train
    owner: str | None = None  # the block or model being written
    statement: list[str] = field(default_factory=list)  # this statement's tokens before the cursor
    brackets: list[Bracket] = field(default_factory=list)  # open brackets, innermost last
    body_names: list[str] = field(default_factory=list)  # names the current body assigns, in order
    train_keys: set[str] = field(default_factory=set)  # keys the train section already has
    in_literal: bool = False  # inside a string or a comment

    @property
    def call(self) -> Bracket | None:
        return self.brackets[-1] if self.brackets and self.brackets[-1].char == "(" else None


def context_at(text: str) -> Context:
    """The context at the end of ``text`` (the text before the cursor)."""
    ctx = Context()
    braces: list[Bracket] = []
    stmt: list[str] = []
    last_kind, last_tok = "", ""
    for m in _TOKEN.finditer(text):
        kind, tok = m.lastgroup or "other", m.group()
        last_kind, last_tok = kind, tok
        if kind in ("ws", "comment"):
            continue
        if kind == "nl":
            if not ctx.brackets or ctx.brackets[-1].char == "{":
                _end_statement(ctx, stmt, braces)
                stmt = []
            continue
        if tok in ("(", "["):
            func = stmt[-1] if tok == "(" and stmt and _is_name(stmt[-1]) else None
            _arg_token(ctx, tok)
            ctx.brackets.append(Bracket(tok, func))
        elif tok in (")", "]"):
            if ctx.brackets and ctx.brackets[-1].char != "{":
                ctx.brackets.pop()
            _arg_token(ctx, tok)
        elif tok == "{":
            braces.append(Bracket("{", head=list(stmt)))
            ctx.brackets.append(braces[-1])
            stmt = []
            continue
        elif tok == "}":
            _end_statement(ctx, stmt, braces)
            while ctx.brackets and ctx.brackets.pop().char != "{":
                pass
            if braces and braces.pop().head[:1] != ["repeat"]:
                ctx.body_names = []  # a repeat's names stay visible after it
            stmt = []
            continue
        elif tok == ";" and (not ctx.brackets or ctx.brackets[-1].char == "{"):
            _end_statement(ctx, stmt, braces)
            stmt = []
            continue
        else:
            _arg_token(ctx, tok)
        stmt.append(tok)
    if last_kind == "comment" or (last_kind == "string" and not _closed(last_tok)):
        ctx.in_literal = True
    if last_kind == "name" and stmt:
        ctx.prefix = stmt.pop()
        if ctx.call is not None and ctx.call.args and ctx.call.args[-1] == ctx.prefix:
            ctx.call.args.pop()
    ctx.statement = stmt
    _section(ctx, braces)
    return ctx


def _closed(tok: str) -> bool:
    """Whether a string token is closed (a lone quote opens one)."""
    return len(tok) >= 2 and tok[-1] == tok[0] and not tok.endswith("\\" + tok[0])


def _is_name(tok: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_]\w*", tok))


def _arg_token(ctx: Context, tok: str) -> None:
    call = ctx.call
    if call is None:
        return
    if tok == ",":
        call.args = []
    else:
        call.args.append(tok)
        if tok == "=" and len(call.args) == 2 and _is_name(call.args[0]):
            call.given.add(call.args[0])


def _end_statement(ctx: Context, stmt: list[str], braces: list[Bracket]) -> None:
    """Remember the names a body statement binds, and the keys a train section has."""
    head = braces[-1].head[:1] if braces else []
    if not stmt or not head:
        return
    if head == ["train"] and _is_name(stmt[0]):
        ctx.train_keys.add(stmt[0])
    elif stmt[0] == "input" and len(stmt) > 1:
        ctx.body_names.append(stmt[1])
    elif "=" in stmt:
        ctx.body_names.extend(t for t in stmt[: stmt.index("=")] if _is_name(t))


def _section(ctx: Context, braces: list[Bracket]) -> None:
    for b in reversed(braces):
        if b.head[:1] in (["block"], ["model"]):
            ctx.section, ctx.owner = b.head[0], b.head[1] if len(b.head) > 1 else None
            return
        if b.head[:1] == ["train"]:
            ctx.section = "train"
            return


# --------------------------------------------------------------------------- items


def complete_text(text: str, index: Index | None) -> list[types.CompletionItem]:
    """What may be typed at the end of ``text``, a ``.dsl`` spec cut at the cursor."""
    if len(text) > MAX_TEXT:
        return []
    ctx = context_at(text)
    if ctx.in_literal:
        return []
    items = _items(ctx, index)
    return [i for i in items if i.label.startswith(ctx.prefix)] if ctx.prefix else items


def _items(ctx: Context, index: Index | None) -> list[types.CompletionItem]:
    stmt = ctx.statement
    if ctx.section == "top":
        return _top(ctx, index)
    if ctx.section == "train":
        return _train(ctx, index)
    if stmt[:1] in (["input"], ["output"]) and ":" in stmt and not _in_square(ctx):
        return _words(DTYPES, Kind.TypeParameter, "dtype") if stmt[-1] == "]" else []
    if _in_square(ctx) and stmt[:1] in (["input"], ["output"]):
        return _names(ctx, index, constants_only=True)
    call = ctx.call
    if call is not None and call.func is not None:
        return _arguments(ctx, index, call, model_callees(index.blocks if index else {}))
    if not stmt:
        return _words(BODY_KEYWORDS, Kind.Keyword, "statement") + _names(ctx, index)
    if stmt[:1] == ["output"]:
        return _names(ctx, index)
    if "=" in stmt or stmt[:1] == ["repeat"]:
        return _callables(model_callees(index.blocks if index else {})) + _names(ctx, index)
    return []


def _in_square(ctx: Context) -> bool:
    return bool(ctx.brackets) and ctx.brackets[-1].char == "["


def _top(ctx: Context, index: Index | None) -> list[types.CompletionItem]:
    stmt = ctx.statement
    if not stmt:
        return _words(TOP_KEYWORDS, Kind.Keyword, "definition")
    call = ctx.call
    if stmt[0] in ("block", "model") and call is not None and call.args[-1:] == [":"]:
        return _words(PARAM_TYPES, Kind.TypeParameter, "param type")
    if "=" in stmt:
        return _names(ctx, index, constants_only=True)
    return []


def _train(ctx: Context, index: Index | None) -> list[types.CompletionItem]:
    stmt = ctx.statement
    if not stmt:
        return [_item(k, Kind.Property, "train key", TRAIN_DOCS.get(k, ""), f"{k} = ")
                for k in KEYS if k not in ctx.train_keys]
    if "=" not in stmt:
        return []
    key = stmt[0]
    callees = train_callees(key)
    call = ctx.call
    if call is not None and call.func is not None:
        return _arguments(ctx, index, call, {**train_callees(None), **callees}, names=key in NAME_VALUE_KEYS)
    names = _names(ctx, index, owner="train") if key in NAME_VALUE_KEYS else []
    return _callables(callees) + names


def _arguments(ctx: Context, index: Index | None, call: Bracket, callees: dict[str, Callee],
               names: bool = True) -> list[types.CompletionItem]:
    """Inside ``f(...)``: its hyperparameters and keyword inputs, then the names in scope."""
    callee = callees.get(call.func or "")
    if "=" in call.args:  # a keyword's value
        return _names(ctx, index) + _callables(callees) if names else _names(ctx, index, constants_only=True)
    items: list[types.CompletionItem] = []
    if callee is not None:
        for p in callee.params:
            if p.name not in call.given:
                default = "required" if p.required else f"= {p.default}"
                items.append(_item(p.name, Kind.Property, f"{p.type} {default}", p.doc, f"{p.name}="))
        for p in callee.options:
            if p.name not in call.given:
                items.append(_item(p.name, Kind.Property, f"tensor = {p.default}", p.doc, f"{p.name}="))
    owner = "train" if ctx.section == "train" else None
    return items + (_names(ctx, index, owner=owner) if names else [])


def _names(ctx: Context, index: Index | None, constants_only: bool = False,
           owner: str | None = None) -> list[types.CompletionItem]:
    """The names in scope: from the last good analysis, then those the text adds."""
    owner = owner or ctx.owner
    bindings = index.names_in(owner) if index is not None else []
    seen: dict[str, types.CompletionItem] = {}
    for b in bindings:
        if constants_only and b.kind not in ("param", "model param", "block param", "loop variable"):
            continue
        seen[b.name] = _binding_item(b)
    if not constants_only:
        for name in ctx.body_names:
            seen.setdefault(name, _item(name, Kind.Variable, "tensor"))
    return list(seen.values())


def _binding_item(b: Binding) -> types.CompletionItem:
    if b.kind in ("tensor", "input", "data field"):
        shape = b.shapes[0].text if len(b.shapes) == 1 else ""
        return _item(b.name, Kind.Variable, f"{b.kind} {shape}".strip())
    if b.kind == "instance":
        return _item(b.name, Kind.Class, b.detail)
    return _item(b.name, Kind.Constant, b.detail or b.kind)


def _callables(callees: dict[str, Callee]) -> list[types.CompletionItem]:
    kinds = {"block": Kind.Class, "user block": Kind.Class, "data source": Kind.Module}
    return [_item(c.name, kinds.get(c.kind, Kind.Function), c.signature, _doc(c)) for c in callees.values()]


def _doc(c: Callee) -> str:
    return "\n\n".join(p for p in (f"{c.kind}" + (f" · {c.shapes}" if c.shapes else ""), c.doc) if p)


def _words(words: Iterable[str], kind: types.CompletionItemKind, detail: str) -> list[types.CompletionItem]:
    return [_item(w, kind, detail) for w in words]


def _item(label: str, kind: types.CompletionItemKind, detail: str = "", doc: str = "",
          insert: str | None = None) -> types.CompletionItem:
    return types.CompletionItem(
        label=label, kind=kind, detail=detail or None,
        documentation=types.MarkupContent(types.MarkupKind.Markdown, doc) if doc else None,
        insert_text=insert,
    )


# --------------------------------------------------------------------------- YAML

_OP = re.compile(r"\bop:\s*[\"']?([A-Za-z_]\w*)?$")
_WITH = re.compile(r"\bop:\s*[\"']?([A-Za-z_]\w*)[\"']?\s*,.*\bwith:\s*\{([^}]*?)([A-Za-z_]\w*)?$")
_KEY = re.compile(r"^(\s*)([A-Za-z_]\w*)?$")
_VALUE = re.compile(r"^\s*([A-Za-z_]\w*):\s*[\"'\[]*\s*([A-Za-z_]\w*)?$")


def complete_yaml(lines: list[str], line: int, col: int, index: Index | None) -> list[types.CompletionItem]:
    """Ops, their hyperparameters in a flow ``with: {...}``, train keys and train values."""
    before = lines[line][:col] if line < len(lines) else ""
    blocks = index.blocks if index is not None else {}
    if m := _WITH.search(before):
        callee = model_callees(blocks).get(m.group(1))
        given = set(re.findall(r"([A-Za-z_]\w*)\s*:", m.group(2)))
        params = [p for p in callee.params if p.name not in given] if callee else []
        return _prefixed([_item(p.name, Kind.Property, f"{p.type} {'required' if p.required else '= ' + p.default}",
                                p.doc, f"{p.name}: ") for p in params], m.group(3))
    if m := _OP.search(before):
        return _prefixed(_callables(model_callees(blocks)), m.group(1))
    parent = _parent_key(lines, line, before)
    if parent == "train":
        if m := _KEY.match(before):
            return _prefixed([_item(k, Kind.Property, "train key", TRAIN_DOCS.get(k, ""), f"{k}: ") for k in KEYS],
                             m.group(2))
        if m := _VALUE.match(before):
            return _prefixed(_callables(train_callees(m.group(1))), m.group(2))
    return []


def _prefixed(items: list[types.CompletionItem], prefix: str | None) -> list[types.CompletionItem]:
    return [i for i in items if i.label.startswith(prefix)] if prefix else items


def _parent_key(lines: list[str], line: int, before: str) -> str | None:
    """The key of the mapping that the cursor's line belongs to (by indentation)."""
    indent = len(before) - len(before.lstrip())
    for n in range(line - 1, -1, -1):
        text = lines[n]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        own = len(text) - len(text.lstrip())
        if own < indent:
            m = re.match(r"\s*([A-Za-z_]\w*)\s*:", text)
            return m.group(1) if m else None
    return None
