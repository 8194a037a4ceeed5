"""The spec formats behind one small registry: the text language and YAML.

Each format names the module that reads it (``read(text, file) -> Spec``) and
the module that writes it (``write(spec) -> str``). They are imported on first
use, so the IR, whose ``Spec.to_text``/``Spec.to_yaml`` ask for a writer here,
never imports a front end, while every front end imports the IR.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsl.language.ir import Spec


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple[str, ...]
    reader: str  # the module whose read(text, file) parses it
    writer: str  # the module whose write(spec) prints it


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("dsl", (".dsl",), reader="dsl.language.text", writer="dsl.language.printer"),
        Format("yaml", (".yaml", ".yml"), reader="dsl.language.yaml_reader", writer="dsl.language.yaml_writer"),
    )
}


def lookup(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown spec format {name!r}: use {' or '.join(repr(k) for k in FORMATS)}") from None


def format_of(path: str) -> str:
    """The format a file's extension names; the text language for any other extension."""
    ext = os.path.splitext(path)[1].lower()
    return next((f.name for f in FORMATS.values() if ext in f.extensions), "dsl")


def read(text: str, format: str, file: str = "<input>") -> Spec:
    spec = importlib.import_module(lookup(format).reader).read(text, file)
    from dsl.language.errors import SpecError
    from dsl.language.reserved import reserved_names

    problems = reserved_names(spec)  # the text grammar reads some reserved words as names
    if problems:
        raise SpecError(problems, {file: text})
    return spec


def write(spec: Spec, format: str) -> str:
    return importlib.import_module(lookup(format).writer).write(spec)
