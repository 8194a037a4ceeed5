"""The text front end: ``.dsl`` source -> :class:`dsl.language.ir.Spec`.

The grammar lives in ``grammar/dsl.lark`` (package ``dsl.grammar``) and is
parsed by Lark's LALR parser, built once and cached. A small post-lexer makes
newlines insignificant inside ``()`` and ``[]`` and sets comments aside so the
printer can keep them. Syntax errors become ``E0101`` diagnostics whose label
says, in words, what was expected (Lark's ``match_examples`` picks the label
from a table of known mistakes); cheap limits checked before parsing become
``E0102``. Pure Python: nothing here imports torch.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lark
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from dsl.language.diagnostics import Diagnostic, Note, Span
from dsl.language.errors import SpecError
from dsl.language.ir import (
    DTYPES,
    Assign,
    BinOp,
    BlockDef,
    Bool,
    Call,
    Comment,
    DimExpr,
    Ellipsis_,
    Expr,
    Index,
    Input,
    Keyword,
    ListExpr,
    Name,
    NoneLit,
    Num,
    Output,
    Param,
    ParamDecl,
    Repeat,
    ShapeSpec,
    Slice,
    Spec,
    Stmt,
    Str,
    Target,
    TrainEntry,
    TrainSection,
    UnaryOp,
    Use,
    Wildcard,
)

__all__ = ["parse_text", "parse_expr", "parse_dim", "MAX_DEPTH", "MAX_LINE", "MAX_CHARS"]

# Limits, checked before parsing so that hostile input fails fast and never
# reaches Python's recursion limit.
MAX_DEPTH = 64  # nesting of (), [] and {}
MAX_LINE = 10_000  # characters on one line
MAX_CHARS = 5_000_000  # characters in one file
MAX_EXPR_DEPTH = 200  # operators nested in one expression (a+b+c+... or ----x)

PARAM_TYPES = ("int", "float", "bool", "str")

# --------------------------------------------------------------------------- parser

_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}


@dataclass
class _LexState:
    """What the post-lexer saw during one parse (kept per thread)."""

    comments: list[Token] = field(default_factory=list)
    open: list[Token] = field(default_factory=list)  # unclosed brackets, innermost last
    last: Token | None = None  # the last token handed to the parser
    prev: Token | None = None  # the one before it

    def before(self, tok: Token) -> Token | None:
        """The token before ``tok``. The parser fails on a token the post-lexer
        already handed over, or on one the contextual lexer raised directly."""
        return self.prev if self.last is tok else self.last

    @property
    def depth(self) -> int:
        """Open ``(`` and ``[`` since the innermost ``{``: newlines there are spaces."""
        n = 0
        for tok in reversed(self.open):
            if tok.type == "LBRACE":
                break
            n += 1
        return n


class _PostLex:
    """Turns each run of newlines and `;` into one _SEP, drops newlines inside
    brackets and takes comments out of the stream."""

    always_accept = ("_NL", "SEMI", "COMMENT")

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def state(self) -> _LexState:
        st = getattr(self._local, "state", None)
        return st if st is not None else _LexState()

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        st = _LexState()
        self._local.state = st
        after_sep = False
        for tok in stream:
            kind = tok.type
            if kind == "COMMENT":
                st.comments.append(tok)
                continue
            if kind == "_NL" and st.depth:
                continue
            if kind in ("_NL", "SEMI"):
                if after_sep:
                    continue
                tok = Token.new_borrow_pos("_SEP", tok.value, tok)
                kind = "_SEP"
            after_sep = kind == "_SEP"
            if kind in _OPENERS:
                st.open.append(tok)
            elif kind in _CLOSERS and st.open and st.open[-1].type == _CLOSERS[kind]:
                st.open.pop()
            if kind != "_SEP":  # "the token before" means a visible one
                st.prev, st.last = st.last, tok
            yield tok


_POSTLEX = _PostLex()
_PARSER: Lark | None = None
_PARSER_LOCK = threading.Lock()


def _cache_path() -> str | None:
    """Where Lark may keep the built parser tables: a directory of this user's
    own (Lark's default is a shared temp dir, and the cache is a pickle)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "dsl")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.stat(folder)
    except OSError:
        return None
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        return None  # someone else could plant a pickle there
    version = f"{lark.__version__}-py{sys.version_info[0]}{sys.version_info[1]}"
    return os.path.join(folder, f"grammar-{version}.lark-cache")


def _parser() -> Lark:
    """The LALR parser, built on first use. Building the tables takes ~100 ms;
    Lark's cache (checked against a hash of the grammar) makes a cold
    ``dsl check`` start several times faster."""
    global _PARSER
    if _PARSER is None:
        with _PARSER_LOCK:
            if _PARSER is None:
                kwargs: dict[str, Any] = dict(
                    parser="lalr",
                    lexer="contextual",
                    propagate_positions=True,
                    start=["start", "expr_only", "dim_only"],
                    postlex=_POSTLEX,
                )
                cache = _cache_path()
                if cache is not None:
                    kwargs["cache"] = cache
                _PARSER = Lark.open_from_package("dsl.grammar", "dsl.lark", **kwargs)
    return _PARSER


def _raw_parse(text: str, start: str = "start") -> Tree:
    return _parser().parse(text, start=start)


# --------------------------------------------------------------------------- limits


def _limit_error(message: str, file: str, line: int, col: int, label: str) -> SpecError:
    span = Span(file=file, line=line, col=col, end_line=line, end_col=col + 1)
    return SpecError([Diagnostic("E0102", message, span, label=label)])


_SCAN = re.compile(r"""[()\[\]{}\n#"'\\]""")


def _check_limits(text: str, file: str, line0: int = 1, col0: int = 1) -> None:
    """File size, bracket depth and line length, in linear passes, before Lark
    sees the text (Lark itself is iterative, but the tree and the IR are not)."""
    if len(text) > MAX_CHARS:
        raise _limit_error(
            f"file too long: {len(text):,} characters (the limit is {MAX_CHARS:,})",
            file, line0, col0, "the file starts here",
        )
    _check_depth(text, file, line0, col0)
    for i, line in enumerate(text.split("\n")):
        if len(line) > MAX_LINE:
            col = MAX_LINE + 1 + (col0 - 1 if i == 0 else 0)
            raise _limit_error(
                f"line too long: {len(line):,} characters (the limit is {MAX_LINE:,})",
                file, line0 + i, col, "the line is cut here",
            )


def _check_depth(text: str, file: str, line0: int, col0: int) -> None:
    depth = 0
    quote: str | None = None
    comment = False
    skip = -1
    line, line_start = 0, 0
    for m in _SCAN.finditer(text):
        pos = m.start()
        if pos < skip:
            continue
        ch = m.group()
        if ch == "\n":
            line, line_start = line + 1, pos + 1
            quote, comment = None, False
        elif comment:
            continue
        elif quote is not None:
            if ch == "\\":
                skip = pos + 2
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
        elif ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                col = pos - line_start + 1 + (col0 - 1 if line == 0 else 0)
                raise _limit_error(
                    f"nesting too deep: more than {MAX_DEPTH} levels of brackets",
                    file, line0 + line, col, f"level {MAX_DEPTH + 1} opens here",
                )
        elif ch in ")]}":
            depth = max(depth - 1, 0)


# --------------------------------------------------------------------------- syntax errors

# What each terminal is, in words, for "expected ..." labels.
_WORDS: dict[str, str] = {
    "NAME": "a name",
    "INT": "a number",
    "FLOAT": "a number",
    "STRING": "a string",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "COMMA": "`,`",
    "EQUAL": "`=`",
    "COLON": "`:`",
    "_SEP": "a new line",
    "$END": "the end of the file",
    "PLUS": "an operator",
    "MINUS": "an operator",
    "MUL_OP": "an operator",
    "POW_OP": "an operator",
    "ELLIPSIS": "`...`",
    "TRUE": "`true`",
    "FALSE": "`false`",
    "NULL": "`null`",
}


def _word(terminal: str) -> str:
    if terminal in _WORDS:
        return _WORDS[terminal]
    if terminal.isalpha() and terminal.isupper():  # a keyword: PARAM -> `param`
        return f"`{terminal.lower()}`"
    return terminal


def _expected_words(expected: set[str]) -> str:
    words: list[str] = []
    # A number, string or name all mean "something that starts an expression".
    if {"NAME", "INT", "STRING"} <= expected:
        words.append("an expression")
        expected = expected - {"INT", "FLOAT", "STRING", "TRUE", "FALSE", "NULL", "LSQB", "LPAR",
                               "PLUS", "MINUS"}
        if "NAME" in expected:
            expected = expected - {"NAME"}
    for t in sorted(expected, key=lambda t: (t.startswith("$"), t == "_SEP", _word(t))):
        w = _word(t)
        if w not in words:
            words.append(w)
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _describe(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_SEP":
        return "`;`" if tok.value == ";" else "end of line"
    if tok.type in ("NAME", "INT", "FLOAT"):
        return f"`{tok.value}`"
    if tok.type == "STRING":
        return "a string"
    if tok.type.isalpha() and tok.type.isupper() and tok.type not in _WORDS:
        return f"keyword `{tok.value}`"
    return f"`{tok.value}`"


# Known mistakes: label -> (message, label shown under the caret, bad examples).
# An example is matched against the error by LALR state and acceptable tokens,
# so one mistake often needs one example per context it can happen in.
_ENDINGS = ("1", "1.5", '"s"', "x", "f(x)", "[x]", "true", "(x)")


def _examples_same_line() -> list[str]:
    out: list[str] = []
    for e in _ENDINGS:
        out += [
            f"model M {{\n    a = {e} b = 2\n}}",
            f"model M {{\n    a = {e} input x: [N]\n}}",
            f"param a = {e} param b = 2",
            f"param a = {e} b",
            f"train {{\n    epochs = {e} seed = 0\n}}",
            f"model M {{\n    repeat 2 {{\n        a = {e} b = 2\n    }}\n}}",
        ]
    out += [
        "model M {\n    input x: [N] long y = 2\n}",
        "model M {\n    input x: [N] y = 2\n}",
        "model M {\n    output x y = 2\n}",
        "model M {\n    output x: [N] long y = 2\n}",
        "model M {\n    output x: [N] y = 2\n}",
        'use "a.dsl" param x = 1',
        "model M {\n    input x: [N]\n} param a = 1",
    ]
    return out


def _examples_missing_paren() -> list[str]:
    out = []
    for e in _ENDINGS:
        out += [f"model M {{\n    h = f({e}\n    y = 2\n}}", f"param a = g(x, {e}\n"]
        out += [f"model M {{\n    h = ({e}\n    y = 2\n}}", f"param a = (1 + {e}\n"]
        out += [f"param a = g(x, k={e}\n", f"param a = g(k={e}\n"]
    out += ["model M(a: int {\n}", "model M(a: int = 1 {\n}", "model M(a {\n}"]
    return out


def _examples_missing_bracket() -> list[str]:
    out = []
    for e in _ENDINGS:
        out += [f"param a = [{e}\n", f"param a = [x, {e}\n"]
        out += [f"model M {{\n    input x: [N, {e}\n}}", f"model M {{\n    input x: [{e}\n}}"]
    out += ["model M {\n    input x: [...\n}", "model M {\n    input x: [..., N\n}"]
    return out


def _examples_missing_equals() -> list[str]:
    return [
        "model M {\n    h elu(h)\n}",
        "model M {\n    h\n}",
        "model M {\n    h 1\n}",
        "model M {\n    a, b\n}",
        "model M {\n    a, b f(x)\n}",
        "param hidden 16",
        "param hidden\n",
        "train {\n    epochs 200\n}",
        "train {\n    epochs\n}",
    ]


def _examples_missing_comma() -> list[str]:
    out = []
    for e in _ENDINGS:
        out += [f"param a = f({e} y)", f"param a = [{e} y]", f"param a = f(k={e} y)"]
        out += [f"param a = f({e} 2)", f"param a = [{e} 2]", f"model M {{\n input x: [{e} F]\n}}"]
        out += [f"model M {{\n input x: [{e} 2]\n}}"]
    out += ["model M(a: int b: int) {\n}", "model M(a b) {\n}", "model M(a = 1 b) {\n}"]
    return out


def _examples_missing_expr() -> list[str]:
    return [
        "param a =\n",
        "param a = ",
        "param a = 1 +\n",
        "param a = 1 *\n",
        "param a = 2 **\n",
        "param a = -\n",
        "param a = f(,)",
        "param a = f(x,,)",
        "param a = f(k=)",
        "param a = [,]",
        "param a = [1,,]",
        "param a = ()",
        "param a = 1 + )",
        "param a = 1 + }",
        "model M {\n    h =\n}",
        "model M {\n    h = }",
        "model M {\n    h = 1 +\n}",
        "train {\n    epochs =\n}",
        "model M {\n    repeat {\n    }\n}",
    ]


def _examples_shape_expected() -> list[str]:
    return [
        "model M {\n    input x: N\n}",
        "model M {\n    input x: long\n}",
        "model M {\n    input x:\n}",
        "model M {\n    input x: 3\n}",
        "model M {\n    input x: (N, F)\n}",
        "model M {\n    output y: N\n}",
        "model M {\n    output y:\n}",
        "model M {\n    input x: }",
    ]


def _examples_missing_brace_open() -> list[str]:
    return [
        "model M\n",
        "model M\n    input x: [N]\n}",
        "model M(a: int)\n",
        "model M() input x: [N]",
        "block B\n",
        "block B(a: int)\n",
        "train\n",
        "train epochs = 1",
        "model M {\n    repeat 2\n}",
        "model M {\n    repeat 2 as i\n}",
        "model M {\n    repeat 2 as i h = 1\n}",
        "model M {\n    repeat n h = 1\n}",
    ]


def _examples_missing_brace_close() -> list[str]:
    return [
        "model M {\n",
        "model M {\n    input x: [N]\n",
        "model M {\n    input x: [N]",
        "model M {\n    h = f(x)\n",
        "model M {\n    h = f(x)",
        "model M {\n    output h\n",
        "model M {\n    output h: [N]\n",
        "model M {\n    output h: [N] long\n",
        "model M {\n    output h",
        "model M {\n    repeat 2 {\n        h = f(x)\n    }\n",
        "train {\n    epochs = 1\n",
        "train {\n",
        "train {\n    epochs = 1",
    ]


def _examples_top_level() -> list[str]:
    return [
        "x = 1",
        "x",
        "1",
        "input x: [N]",
        "output y",
        "repeat 2 {\n}",
        "{\n}",
        "param a = 1\nh = 2",
        "model M {\n}\nh = f(x)",
        "model M {\n}\ninput x: [N]",
        ")",
        "]",
    ]


def _examples_statement() -> list[str]:
    return [
        "model M {\n    1\n}",
        "model M {\n    3 = x\n}",
        "model M {\n    (x)\n}",
        "model M {\n    [x]\n}",
        "model M {\n    = 1\n}",
        "model M {\n    \"s\"\n}",
        "model M {\n    h = 1\n    2\n}",
        "model M {\n    input x: [N]; )\n}",
    ]


def _examples_train_entry() -> list[str]:
    return [
        "train {\n    1\n}",
        "train {\n    \"data\" = 1\n}",
        "train {\n    data = 1\n    2\n}",
        "train {\n    a, b = 1\n}",
        "train {\n    input x: [N]\n}",
        "train {\n    = 1\n}",
    ]


def _examples_name_after() -> list[str]:
    return [
        "model M {\n    input : [N]\n}",
        "model M {\n    input 3\n}",
        "model M {\n    input\n}",
        "model M {\n    output\n}",
        "model M {\n    output 3\n}",
        "param = 1",
        "param 3 = 1",
        "param\n",
        "model {\n}",
        "model (a: int) {\n}",
        "block {\n}",
        "block 3 {\n}",
        "model M {\n    repeat 2 as {\n    }\n}",
        "model M {\n    repeat 2 as 3 {\n    }\n}",
        "model M {\n    a, = 1\n}",
        "model M {\n    a, 3 = 1\n}",
    ]


def _examples_param_decl() -> list[str]:
    return [
        "model M(3) {\n}",
        "model M(: int) {\n}",
        "model M(a:) {\n}",
        "model M(a: 3) {\n}",
        "model M(a, 3) {\n}",
        "model M(a: int, = 1) {\n}",
        "model M(a =) {\n}",
        "block B(\"a\") {\n}",
    ]


def _examples_use_path() -> list[str]:
    return ["use foo", "use\n", "use 3", "use (\"a\")", 'use "a" "b"']


def _examples_bad_target() -> list[str]:
    return [
        "model M {\n    f(x) = 1\n}",
        "model M {\n    a = b = 1\n}",
        "param a = b = 1",
        "train {\n    a = b = 1\n}",
        "param a = f(1 = 2)",
        "param a = f(g(x) = 2)",
        "param a = f(k == 2)",
    ]


def _examples_stray_closer() -> list[str]:
    out = []
    for e in _ENDINGS:
        out += [f"param a = {e})", f"param a = {e}]", f"param a = f({e}))", f"param a = [{e}]]"]
        out += [f"model M {{\n    a = {e})\n}}", f"model M {{\n    a = {e}]\n}}"]
        out += [f"train {{\n    a = {e})\n}}"]
    out += ["param a = f(x]", "param a = [x)", "param a = (x]", "model M {\n    input x: [N)\n}"]
    out += ["model M {\n    input x: [N])\n}", "model M {\n    input x: [N] long)\n}"]
    return out


_EXAMPLES: dict[str, tuple[str, str, list[str]]] = {
    "same-line": (
        "statement must start on a new line",
        "put a new line or `;` before this",
        _examples_same_line(),
    ),
    "missing-paren": ("missing `)`", "expected `)` here", _examples_missing_paren()),
    "missing-bracket": ("missing `]`", "expected `]` here", _examples_missing_bracket()),
    "missing-equals": (
        "missing `=` in assignment",
        "expected `=` and a value after the name",
        _examples_missing_equals(),
    ),
    "missing-comma": (
        "missing `,` between items",
        "expected `,` before this",
        _examples_missing_comma(),
    ),
    "missing-expr": (
        "missing expression",
        "expected a value: a number, a name, a call, a string or a list",
        _examples_missing_expr(),
    ),
    "shape-expected": (
        "expected a shape like [N, F] after `input x:`",
        "expected a shape in brackets, such as [N, F] or [..., D]",
        _examples_shape_expected(),
    ),
    "missing-open-brace": (
        "missing `{`",
        "expected `{` to open the body",
        _examples_missing_brace_open(),
    ),
    "missing-close-brace": (
        "missing `}`",
        "expected `}` to close the body",
        _examples_missing_brace_close(),
    ),
    "top-level": (
        "not allowed at the top level",
        "a file holds only `param`, `use`, `block`, `model` and `train`",
        _examples_top_level(),
    ),
    "statement": (
        "expected a statement",
        "a statement is `input`, `output`, `repeat` or `name = value`",
        _examples_statement(),
    ),
    "train-entry": (
        "expected `key = value` in the train section",
        "a train entry is a name, `=` and a value",
        _examples_train_entry(),
    ),
    "top-in-body": (
        "only allowed at the top level",
        "move this out of the `{ }` body",
        [],
    ),
    "name-expected": ("expected a name", "expected a name here", _examples_name_after()),
    "param-decl": (
        "invalid parameter declaration",
        "expected `name: type = default`, such as `heads: int = 4`",
        _examples_param_decl(),
    ),
    "use-path": (
        "`use` needs a quoted path",
        'expected a string such as "layers.dsl"',
        _examples_use_path(),
    ),
    "bad-target": (
        "invalid assignment target",
        "only names can be assigned (`a = ...` or `a, b = ...`)",
        _examples_bad_target(),
    ),
    "stray-closer": (
        "unmatched closing bracket",
        "this does not close any open bracket",
        _examples_stray_closer(),
    ),
}

# Labels whose caret is better placed right after the previous token when the
# offending token is on a later line (the closer was forgotten at a line end).
_AT_PREVIOUS_END = {"missing-paren", "missing-bracket", "missing-equals", "missing-comma",
                    "missing-open-brace", "missing-expr", "shape-expected", "name-expected"}

_EXAMPLE_LIST: list[tuple[str, list[str]]] = [(k, v[2]) for k, v in _EXAMPLES.items()]


class _Pos:
    """Maps positions in parsed text to the original file (for parse_expr)."""

    def __init__(self, file: str, line0: int = 1, col0: int = 1):
        self.file, self.line0, self.col0 = file, line0, col0

    def lc(self, line: int, col: int) -> tuple[int, int]:
        return line + self.line0 - 1, col + (self.col0 - 1 if line == 1 else 0)

    def span(self, line: int, col: int, end_line: int, end_col: int) -> Span:
        ln, cl = self.lc(line, col)
        el, ec = self.lc(end_line, end_col)
        return Span(file=self.file, line=ln, col=cl, end_line=el, end_col=ec)

    def tok(self, tok: Token) -> Span:
        if tok.type == "_SEP":  # a newline token: point at the line's end only
            return self.span(tok.line, tok.column, tok.line, tok.column + 1)
        return self.span(tok.line, tok.column, tok.end_line, tok.end_column)

    def node(self, tree: Tree) -> Span:
        m = tree.meta
        if getattr(m, "empty", True):
            return Span(file=self.file)
        return self.span(m.line, m.column, m.end_line, m.end_column)


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    return len(lines), len(lines[-1]) + 1


def _syntax_error(exc: UnexpectedInput, text: str, pos: _Pos, start: str) -> SpecError:
    if isinstance(exc, UnexpectedCharacters):
        return SpecError([_char_error(exc, text, pos)])
    assert isinstance(exc, UnexpectedToken)
    state = _POSTLEX.state  # of the failed parse: read before match_examples re-parses
    tok = exc.token
    last = state.before(tok)
    opened = [t for t in state.open if t is not tok]
    key = _match(exc, start)
    if tok.type == "$END":
        line, col = _end_position(text)
        span = pos.span(line, col, line, col + 1)
    else:
        span = pos.tok(tok)
    notes: list[Note] = []
    if key is None:
        key = _heuristic(exc, tok, last)
    key = _which_bracket(key, exc, tok, last, opened)
    if _top_word_in_body(tok, last, opened):
        assert last is not None
        key = "missing-close-brace" if last.column == 1 else "top-in-body"
        span = pos.tok(last)
    if key is not None:
        message, label, _ = _EXAMPLES[key]
        if key in _AT_PREVIOUS_END and last is not None and _later_line(tok, last):
            span = pos.span(last.end_line, last.end_column, last.end_line, last.end_column + 1)
        opener = _opener_for(key, opened)
        if opener is not None:
            notes.append(Note(f"`{opener.value}` opened here", pos.tok(opener)))
        if key in ("statement", "top-level"):
            message = f"{message}, found {_describe(tok)}"
        elif key == "top-in-body" and last is not None:
            message = f"`{last.value}` is {message}"
    else:
        message = f"unexpected {_describe(tok)}"
        label = f"expected {_expected_words(set(exc.accepts or exc.expected))}"
    return SpecError([Diagnostic("E0101", message, span, label=label, notes=notes)],
                     sources={pos.file: text} if pos.line0 == 1 and pos.col0 == 1 else None)


def _which_bracket(
    key: str | None, exc: UnexpectedToken, tok: Token, last: Token | None, opened: list[Token]
) -> str | None:
    """Inside brackets, a token on the same line means a forgotten `,`; on a later
    line, a forgotten closer (newlines are spaces there, so the error shows late)."""
    inner = None
    for t in reversed(opened):
        if t.type == "LBRACE":
            break
        inner = inner or t
    if tok.type in ("$END", "RBRACE") and inner is not None:
        return "missing-paren" if inner.type == "LPAR" else "missing-bracket"
    if key not in ("missing-paren", "missing-bracket", "missing-comma"):
        return key
    accepts = set(exc.accepts or exc.expected)
    at_end = tok.type in ("$END", "LBRACE", "RBRACE")
    if last is not None and not at_end and not _later_line(tok, last) and "COMMA" in accepts:
        return "missing-comma"
    inner = next((t for t in reversed(opened) if t.type in ("LPAR", "LSQB")), None)
    if inner is None:
        return key
    return "missing-paren" if inner.type == "LPAR" else "missing-bracket"


_TOP_WORDS = ("param", "use", "block", "model", "train")


def _top_word_in_body(tok: Token, last: Token | None, opened: list[Token]) -> bool:
    """``param``/``block``/... where a statement starts inside ``{ }``: either a
    ``}`` was forgotten above (at column 1) or a definition was put in a body.
    Inside a body these words are plain names, so the parser stumbles just after."""
    return (
        last is not None
        and last.type == "NAME"
        and last.value in _TOP_WORDS
        and bool(opened)
        and opened[-1].type == "LBRACE"
        and tok.type not in ("EQUAL", "COMMA")
        and getattr(tok, "line", None) == last.line
    )


def _later_line(tok: Token, last: Token) -> bool:
    if tok.type == "$END":
        return True
    if tok.type == "_SEP":
        return False
    return (tok.line or 0) > (last.end_line or 0)


def _opener_for(key: str, opened: list[Token]) -> Token | None:
    want = {"missing-paren": "LPAR", "missing-bracket": "LSQB", "missing-close-brace": "LBRACE"}
    kind = want.get(key)
    if kind is None:
        return None
    for tok in reversed(opened):
        if tok.type == kind:
            return tok
    return None


# Lark's own ``UnexpectedInput.match_examples`` does this job, but in lark 1.3
# it crashes formatting a debug message when a state matches with different
# acceptable tokens (the state is a ParserState, not an int), it compares stack
# depth (tying each example to one nesting level) and it re-parses every example
# on every error. The same idea, with the examples' errors computed once:
_Signature = tuple[Any, frozenset[str]]
_TABLE: dict[_Signature, list[tuple[str, str]]] | None = None


def _signature(exc: UnexpectedToken) -> _Signature:
    state = exc.state
    position = getattr(state, "position", state)  # the LALR state number
    return position, frozenset(exc.accepts or exc.expected or ())


def _example_table() -> dict[_Signature, list[tuple[str, str]]]:
    global _TABLE
    if _TABLE is None:
        table: dict[_Signature, list[tuple[str, str]]] = {}
        for key, examples in _EXAMPLE_LIST:
            for example in examples:
                try:
                    _raw_parse(example)
                except UnexpectedToken as err:
                    table.setdefault(_signature(err), []).append((key, err.token.type))
                except UnexpectedInput:
                    continue
        _TABLE = table
    return _TABLE


def _match(exc: UnexpectedToken, start: str) -> str | None:
    """The label of the example that failed like ``exc``: same parser state and
    acceptable tokens, preferring one that also stumbled on the same kind of token."""
    if start == "dim_only":
        return None
    candidates = _example_table().get(_signature(exc), [])
    for key, token_type in candidates:
        if token_type == exc.token.type:
            return key
    return candidates[0][0] if candidates else None


def _heuristic(exc: UnexpectedToken, tok: Token, last: Token | None) -> str | None:
    """Fallback when no example matches: a few rules on the acceptable tokens."""
    accepts = set(exc.accepts or exc.expected)
    if tok.type in ("RPAR", "RSQB") and tok.type not in accepts:
        return "stray-closer"
    if tok.type in ("$END", "RBRACE", "LBRACE"):
        for closer, key in (("RPAR", "missing-paren"), ("RSQB", "missing-bracket")):
            if closer in accepts:
                return key
    if tok.type == "$END" and "RBRACE" in accepts:
        return "missing-close-brace"
    if accepts >= {"NAME", "INT", "STRING"} and "_SEP" not in accepts:
        return "missing-expr"
    if "LBRACE" in accepts and "RBRACE" not in accepts:
        return "missing-open-brace"
    if "_SEP" in accepts and tok.type not in ("_SEP", "$END") and last is not None:
        if tok.line == last.end_line:
            return "same-line"
    for closer, key in (("RPAR", "missing-paren"), ("RSQB", "missing-bracket")):
        if closer in accepts and "COMMA" in accepts:
            return key
    return None


def _char_error(exc: UnexpectedCharacters, text: str, pos: _Pos) -> Diagnostic:
    ch = exc.char
    line, col = exc.line, exc.column
    if ch in "\"'":
        line_text = text.split("\n")[line - 1] if 0 < line <= text.count("\n") + 1 else ""
        end = len(line_text) + 1
        return Diagnostic(
            "E0101",
            "unterminated string",
            pos.span(line, col, line, max(end, col + 1)),
            label=f"this string has no closing `{ch}` on its line",
        )
    shown = ch if ch.isprintable() else repr(ch)
    label = "remove this character"
    if ch == ".":
        label = "`...` is the only use of `.`; names cannot contain dots"
    elif ch == "!":
        label = "`!` is not an operator here"
    elif ch == "\\":
        label = "no line continuation is needed: a statement continues inside ( ) and [ ]"
    return Diagnostic(
        "E0101",
        f"unexpected character `{shown}`",
        pos.span(line, col, line, col + 1),
        label=label,
    )


# --------------------------------------------------------------------------- tree -> IR


def _error(message: str, span: Span, label: str, code: str = "E0101") -> SpecError:
    return SpecError([Diagnostic(code, message, span, label=label)])


class _Builder:
    """Turns Lark's tree into IR nodes, each with its span."""

    def __init__(self, pos: _Pos):
        self.pos = pos
        self.depth = 0

    # -- top level
    def spec(self, tree: Tree, comments: list[Token], text: str) -> Spec:
        params: list[Param] = []
        uses: list[Use] = []
        blocks: list[BlockDef] = []
        model: BlockDef | None = None
        train: TrainSection | None = None
        for item in tree.children:
            kind = item.data
            if kind == "param":
                params.append(self.param(item))
            elif kind == "use":
                uses.append(self.use(item))
            elif kind == "block_def":
                blocks.append(self.block_def(item, is_model=False))
            elif kind == "model_def":
                if model is not None:
                    raise self._second(item, "model", model)
                model = self.block_def(item, is_model=True)
            elif kind == "train":
                if train is not None:
                    raise self._second(item, "train", train)
                train = self.train(item)
        return Spec(
            span=self.pos.node(tree) if tree.children else Span(file=self.pos.file),
            file=self.pos.file,
            format="dsl",
            params=tuple(params),
            uses=tuple(uses),
            blocks=tuple(blocks),
            model=model,
            train=train,
            comments=tuple(
                Comment(text=c.value.rstrip(), span=self.pos.tok(c)) for c in comments
            ),
        )

    def _second(self, item: Tree, what: str, first: BlockDef | TrainSection) -> SpecError:
        m = item.meta
        name = item.children[0] if what == "model" else None
        end_col = (name.end_column if isinstance(name, Token) else m.column + len(what))
        span = self.pos.span(m.line, m.column, m.line if name is None else name.end_line, end_col)
        diag = Diagnostic(
            "E0101",
            f"a file holds at most one `{what}`" + (" section" if what == "train" else ""),
            span,
            label=f"second `{what}` here",
            notes=[Note(f"the first `{what}` is here", first.span)],
            help="move it to its own file and import its blocks with `use`"
            if what == "model" else "merge the two train sections",
        )
        return SpecError([diag])

    def param(self, tree: Tree) -> Param:
        name, value = tree.children
        return Param(span=self.pos.node(tree), name=str(name), value=self.expr(value))

    def use(self, tree: Tree) -> Use:
        (path,) = tree.children
        return Use(span=self.pos.node(tree), path=self.string(path))

    def block_def(self, tree: Tree, is_model: bool) -> BlockDef:
        name, *rest = tree.children
        params: tuple[ParamDecl, ...] = ()
        body: tuple[Stmt, ...] = ()
        for child in rest:
            if child.data == "params":
                params = tuple(self.param_decl(p) for p in child.children if p is not None)
            else:
                body = self.body(child)
        return BlockDef(
            span=self.pos.node(tree),
            name=str(name),
            name_span=self.pos.tok(name),
            params=params,
            body=body,
            is_model=is_model,
        )

    def param_decl(self, tree: Tree) -> ParamDecl:
        name, typ, default = tree.children
        if typ is not None and str(typ) not in PARAM_TYPES:
            raise _error(
                f"unknown parameter type `{typ}`",
                self.pos.tok(typ),
                "expected int, float, bool or str",
            )
        return ParamDecl(
            span=self.pos.node(tree),
            name=str(name),
            type=str(typ) if typ is not None else None,
            default=self.expr(default) if default is not None else None,
        )

    def body(self, tree: Tree) -> tuple[Stmt, ...]:
        return tuple(self.stmt(s) for s in tree.children)

    # -- statements
    def stmt(self, tree: Tree) -> Stmt:
        kind = tree.data
        if kind == "input" or kind == "output":
            return self.tensor_decl(tree, Input if kind == "input" else Output)
        if kind == "assign":
            targets, value = tree.children
            return Assign(
                span=self.pos.node(tree),
                targets=tuple(Target(span=self.pos.tok(t), name=str(t)) for t in targets.children),
                value=self.expr(value),
            )
        assert kind == "repeat", kind
        count, var, body = tree.children
        return Repeat(
            span=self.pos.node(tree),
            count=self.expr(count),
            var=str(var) if var is not None else None,
            body=self.body(body),
        )

    def tensor_decl(self, tree: Tree, cls: type[Input] | type[Output]) -> Input | Output:
        name, shape, dtype = tree.children
        if dtype is not None and str(dtype) not in DTYPES:
            raise _error(
                f"unknown dtype `{dtype}`",
                self.pos.tok(dtype),
                "expected float, long, int or bool",
            )
        return cls(
            span=self.pos.node(tree),
            name=str(name),
            shape=self.shape(shape) if shape is not None else None,
            dtype=str(dtype) if dtype is not None else None,
        )

    def train(self, tree: Tree) -> TrainSection:
        (body,) = tree.children
        entries = []
        for e in body.children:
            key, value = e.children
            entries.append(
                TrainEntry(
                    span=self.pos.node(e),
                    key=str(key),
                    key_span=self.pos.tok(key),
                    value=self.expr(value),
                )
            )
        return TrainSection(span=self.pos.node(tree), entries=tuple(entries))

    # -- shapes
    def shape(self, tree: Tree) -> ShapeSpec:
        dims = [d for d in tree.children if d is not None]
        out: list[DimExpr] = []
        for i, d in enumerate(dims):
            if isinstance(d, Token) and d.type == "ELLIPSIS" and i > 0:
                raise _error(
                    "`...` must lead a shape",
                    self.pos.tok(d),
                    "`...` stands for any leading dimensions, so it can only come first",
                )
            out.append(self.dim(d))
        return ShapeSpec(span=self.pos.node(tree), dims=tuple(out))

    def dim(self, node: Tree | Token) -> DimExpr:
        if isinstance(node, Token) and node.type == "ELLIPSIS":
            return Ellipsis_(span=self.pos.tok(node))
        if isinstance(node, Tree) and node.data == "name" and str(node.children[0]) == "_":
            return Wildcard(span=self.pos.node(node))
        value = self.expr(node)
        self._check_dim(value)
        return value  # type: ignore[return-value]

    def _check_dim(self, e: Expr) -> None:
        if isinstance(e, Num):
            return
        if isinstance(e, Name):
            if e.id == "_":
                raise _error("`_` must stand alone in a shape", e.span, "`_` is one whole dimension")
            return
        if isinstance(e, UnaryOp):
            self._check_dim(e.operand)
            return
        if isinstance(e, BinOp):
            self._check_dim(e.left)
            self._check_dim(e.right)
            return
        raise _error(
            "invalid shape dimension",
            e.span,
            "a dimension is an integer, a name, `_`, `...` or arithmetic such as hidden*heads",
        )

    # -- expressions
    def expr(self, node: Tree | Token) -> Expr:
        self.depth += 1
        try:
            if self.depth > MAX_EXPR_DEPTH:
                span = self.pos.node(node) if isinstance(node, Tree) else self.pos.tok(node)
                raise _error(
                    f"expression nested too deeply: more than {MAX_EXPR_DEPTH} levels",
                    span,
                    "split it into several assignments or params",
                    code="E0102",
                )
            return self._expr(node)
        finally:
            self.depth -= 1

    def _expr(self, node: Tree | Token) -> Expr:
        assert isinstance(node, Tree), node
        kind = node.data
        span = self.pos.node(node)
        ch = node.children
        if kind == "int":
            return Num(span=span, value=self.integer(ch[0], span))
        if kind == "float":
            return Num(span=span, value=float(ch[0]))
        if kind == "string":
            return Str(span=span, value=self.string(ch[0]))
        if kind == "true" or kind == "false":
            return Bool(span=span, value=kind == "true")
        if kind == "null":
            return NoneLit(span=span)
        if kind == "name":
            return Name(span=span, id=str(ch[0]))
        if kind == "unaryop":
            return UnaryOp(span=span, op=str(ch[0]), operand=self.expr(ch[1]))
        if kind == "binop":
            return BinOp(span=span, op=str(ch[1]), left=self.expr(ch[0]), right=self.expr(ch[2]))
        if kind == "list":
            return ListExpr(span=span, items=tuple(self.expr(c) for c in ch if c is not None))
        if kind == "call":
            return self.call(node, span)
        if kind == "index":
            value, subscripts = ch
            return Index(span=span, value=self.expr(value), items=tuple(self.subscript(c) for c in subscripts.children))
        raise AssertionError(f"unknown expression node {kind}")

    def subscript(self, node: Tree | Token) -> Expr | Slice | Ellipsis_:
        """One item of ``x[...]``: an expression, a slice ``a:b:s`` or ``...``."""
        if isinstance(node, Tree) and node.data == "slice":
            start, stop, step = (self.expr(c) if c is not None else None for c in node.children)
            return Slice(span=self.pos.node(node), start=start, stop=stop, step=step)
        if isinstance(node, Tree) and node.data == "ellipsis_item":
            return Ellipsis_(span=self.pos.node(node))
        return self.expr(node)

    def call(self, node: Tree, span: Span) -> Call:
        func, arguments = node.children
        args: list[Expr] = []
        kwargs: list[Keyword] = []
        seen: dict[str, Span] = {}
        for a in arguments.children if arguments is not None else ():
            if isinstance(a, Tree) and a.data == "kwarg":
                key, value = a.children
                if str(key) in seen:
                    raise _error(
                        f"keyword argument `{key}` given twice",
                        self.pos.tok(key),
                        "remove one of the two",
                    )
                seen[str(key)] = self.pos.tok(key)
                kwargs.append(Keyword(span=self.pos.node(a), name=str(key), value=self.expr(value)))
            else:
                if kwargs:
                    raise _error(
                        "positional argument after keyword argument",
                        self.pos.node(a) if isinstance(a, Tree) else self.pos.tok(a),
                        "put positional (tensor) arguments before `key=value` arguments",
                    )
                args.append(self.expr(a))
        return Call(span=span, func=str(func), func_span=self.pos.tok(func),
                    args=tuple(args), kwargs=tuple(kwargs))

    def integer(self, tok: Token, span: Span) -> int:
        try:
            return int(tok)
        except ValueError:  # Python refuses to convert over 4300 digits
            limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
            raise _error(f"number too long: {len(str(tok)):,} digits (the limit is {limit:,})", span,
                         "an integer literal this long cannot be a size", code="E0102") from None

    def string(self, tok: Token) -> str:
        return _unescape(str(tok)[1:-1])


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def _unescape(body: str) -> str:
    """Simple escapes only (no eval): an unknown escape keeps its backslash."""
    if "\\" not in body:
        return body
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), body)


# --------------------------------------------------------------------------- public API


def _parse(text: str, pos: _Pos, start: str) -> tuple[Tree, list[Token]]:
    if not isinstance(text, str):
        raise TypeError(f"expected source text (str), got {type(text).__name__}")
    _check_limits(text, pos.file, pos.line0, pos.col0)
    if text.startswith("\ufeff"):  # a byte-order mark: a space keeps the columns right
        text = " " + text[1:]
    try:
        tree = _raw_parse(text, start)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, pos, start) from None
    return tree, list(_POSTLEX.state.comments)


def parse_text(text: str, file: str = "<input>") -> Spec:
    """Parse a whole ``.dsl`` file. Raises :class:`SpecError` (E0101/E0102)."""
    pos = _Pos(file)
    tree, comments = _parse(text, pos, "start")
    try:
        return _Builder(pos).spec(tree, comments, text)
    except SpecError as err:  # attach the source so the caret line renders
        raise SpecError(err.diagnostics, sources={file: text}) from None


def read(text: str, file: str = "<input>") -> Spec:
    """The format registry's entry point (:mod:`dsl.language.formats`)."""
    return parse_text(text, file)


def parse_expr(text: str, file: str = "<input>", line: int = 1, col: int = 1) -> Expr:
    """Parse one expression whose first character sits at (line, col) of ``file``."""
    pos = _Pos(file, line, col)
    tree, _ = _parse(text, pos, "expr_only")
    return _Builder(pos).expr(tree.children[0])


def parse_dim(text: str, file: str = "<input>", line: int = 1, col: int = 1) -> DimExpr:
    """Parse one shape item: ``B``, ``_``, ``...``, ``hidden*2`` or ``64``."""
    pos = _Pos(file, line, col)
    tree, _ = _parse(text, pos, "dim_only")
    return _Builder(pos).dim(tree.children[0])
