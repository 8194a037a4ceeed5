"""The canonical text of a spec (what ``dsl fmt`` writes and the language server's
formatting returns), proven to mean what the original means. Pure Python."""

from __future__ import annotations

from dsl.language import formats
from dsl.language.errors import DslError
from dsl.language.ir import Spec, strip_spans
from dsl.language.source import loads


class FormatError(DslError):
    """Formatting would change what a spec means (a printer bug): nothing is written."""


def canonical(spec: Spec) -> str:
    """``spec`` printed in its own format's canonical layout, comments kept.

    The result is read back and compared with ``spec`` (spans aside) and its
    comments: a formatter must never change what a spec means."""
    text = formats.write(spec, spec.format)
    again = loads(text, spec.format, file=spec.file)
    if strip_spans(again) != strip_spans(spec) or _comments(again) != _comments(spec):
        raise FormatError(f"formatting `{spec.file}` would change its meaning; file left as it is")
    return text


def _comments(spec: Spec) -> list[str]:
    """The comment texts, in order (YAML's blank-line markers left out)."""
    return [c.text for c in sorted(spec.comments, key=lambda c: (c.span.line, c.span.col)) if c.text]
