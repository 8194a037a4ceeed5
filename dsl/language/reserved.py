"""The words no front end accepts as a name. Pure Python.

The YAML form and ``dsl.Graph`` refuse them when a name is given
(:func:`dsl.language.yaml_reader.check_identifier`); the text grammar reads some
of them as names where they cannot start a statement (``as = ...``,
``param model = 1``), so :func:`reserved_names` checks the names a text spec
defines after parsing. A spec is then valid in every front end or in none:
``dsl convert`` never writes YAML that the YAML reader refuses.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterator

from dsl.language import ir
from dsl.language.diagnostics import Diagnostic, Span

RESERVED_WORDS = frozenset(
    {"param", "use", "block", "model", "input", "output", "repeat", "as", "train", "true", "false", "null"}
)
# Names a model input cannot take: inputs become the parameters of the compiled module's forward().
NOT_INPUT_NAMES = frozenset(keyword.kwlist) | {"self", "torch"}


def reserved_names(spec: ir.Spec) -> list[Diagnostic]:
    """E0213 for every name ``spec`` defines that is a reserved word."""
    return [Diagnostic("E0213", f"invalid {what}: `{name}` is a reserved word", span, label="not a valid name",
                       help="rename it (reserved: " + ", ".join(sorted(RESERVED_WORDS)) + ")")
            for name, what, span in _defined(spec) if name in RESERVED_WORDS]


def _defined(spec: ir.Spec) -> Iterator[tuple[str, str, Span]]:
    """(name, what it names, where) of every name the spec defines."""
    for p in spec.params:
        yield p.name, "param name", p.span
    for b in (*spec.blocks, *([spec.model] if spec.model is not None else [])):
        yield b.name, "model name" if b.is_model else "block name", b.name_span if b.name_span.known else b.span
        for a in b.params:
            yield a.name, "param name", a.span
        yield from _body(b.body)


def _body(body: tuple[ir.Stmt, ...]) -> Iterator[tuple[str, str, Span]]:
    for s in body:
        if isinstance(s, ir.Input):
            yield s.name, "input name", s.span
        elif isinstance(s, ir.Assign):
            yield from ((t.name, "tensor name", t.span) for t in s.targets)
        elif isinstance(s, ir.Repeat):
            if s.var is not None:
                yield s.var, "loop variable", s.span
            yield from _body(s.body)
