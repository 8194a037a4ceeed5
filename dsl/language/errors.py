"""The errors dsl raises on purpose, under one root: :class:`DslError`.

A :class:`SpecError` carries every diagnostic of a spec; an :class:`InputError`
is a call of a compiled model whose inputs contradict its spec. Other layers
derive their own (a run directory that cannot be read, an export that fails
its check) from :class:`DslError` too, so ``except dsl.DslError`` catches
every expected failure and nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from dsl.language.diagnostics import Diagnostic, Span, render_all, sort_diagnostics


class DslError(Exception):
    """Root of every error that dsl raises on purpose (a bug raises anything else)."""


class SpecError(DslError):
    """Every diagnostic of a spec; ``str()`` renders them, sorted by position."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        super().__init__()
        self.diagnostics = sort_diagnostics(diagnostics)
        self.sources = sources or {}

    def render(self, limit: int | None = None) -> str:
        return render_all(self.diagnostics, self.sources, limit=limit)

    def __str__(self) -> str:
        return self.render()

    def to_json(self) -> str:
        return json.dumps([d.to_dict() for d in self.diagnostics], indent=2)


class InputError(DslError, ValueError):
    """A call whose inputs contradict the spec; ``input``/``dim``/``expected``/``actual`` say how."""

    def __init__(self, message: str, input: str | None = None, dim: int | None = None,
                 expected: Any = None, actual: Any = None):
        super().__init__(message)
        self.input, self.dim, self.expected, self.actual = input, dim, expected, actual


class RunError(DslError):
    """A run that cannot start, go on or be read (a run directory, a data file, a checkpoint); the message says why.

    With a ``code`` (a run directory's file that cannot be used, a directory another run holds)
    it is shown as a diagnostic pointing at ``file``; without one, as one line."""

    code: str | None = None

    def __init__(self, message: str = "", code: str | None = None, file: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        self.file = file

    def diagnostic(self) -> Diagnostic | None:
        """The error as a diagnostic, when it has a code."""
        if self.code is None:
            return None
        return Diagnostic(self.code, str(self), Span(file=self.file or "<input>"))
