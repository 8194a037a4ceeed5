"""dsl: a declarative language for composing neural networks out of research blocks.

``import dsl`` is cheap and never imports torch; only :func:`compile`, :func:`train`
and :func:`load_run` do.
"""

from __future__ import annotations

from dsl.api import check, compile, load, load_run, loads, train
from dsl.language.diagnostics import Diagnostic, Span
from dsl.language.errors import DslError, InputError, SpecError
from dsl.language.ir import Spec

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Graph":
        from dsl.language.builder import Graph

        return Graph
    if name == "Run":
        from dsl.training.runs import Run

        return Run
    raise AttributeError(f"module 'dsl' has no attribute {name!r}")


__all__ = ["Diagnostic", "DslError", "Graph", "InputError", "Run", "Spec", "SpecError", "Span", "check", "compile",
           "load", "load_run", "loads", "train", "__version__"]
