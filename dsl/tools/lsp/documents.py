"""The open documents, their analyses and their ``use`` graph.

Each open spec is analysed (:func:`dsl.checking.analysis.analyse`) with a loader
that reads the files it ``use``s from the editor's unsaved texts when they are
open and from disk otherwise, so that a change to a file re-checks, at once,
the open files that use it. Parsed files are kept by version (open ones) or by
modification time and size (files on disk): re-checking a file does not
re-read the files it imports unless they changed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from dsl.checking.analysis import Analysis, analyse
from dsl.language import formats, ir
from dsl.language.diagnostics import Diagnostic, Note, Span
from dsl.language.errors import SpecError
from dsl.language.source import load, loads
from dsl.tools.lsp.callees import use_target
from dsl.tools.lsp.index import Index, build_index

# A YAML file is a spec when one of these is a top-level key; any other YAML file
# (a CI workflow, a config) is left alone.
_YAML_SPEC = re.compile(r"^(?:params|use|blocks|model|train)\s*:", re.MULTILINE)
_NO_MODEL = "E0208"  # a file without a model is a library of blocks and params: no error in an editor


@dataclass
class Document:
    uri: str
    file: str  # the name its spans carry: its path, or the URI when it is not a file
    format: str
    text: str
    version: int | None = None
    analysis: Analysis | None = None  # of the current text; None when it does not parse
    diagnostics: list[Diagnostic] = field(default_factory=list)  # its own analysis's
    reads: set[str] = field(default_factory=set)  # the files its analysis read (or looked for) through `use`
    graph: dict[str, list[str]] = field(default_factory=dict)  # file -> the files it uses
    checked: bool = False  # whether the current text has been analysed
    _index: Index | None = None
    _good: tuple[Analysis, list[str]] | None = None  # the last good analysis and the lines it read
    _good_index: Index | None = None

    @property
    def is_spec(self) -> bool:
        return self.format != "yaml" or not self.text.strip() or bool(_YAML_SPEC.search(self.text))

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    def index(self) -> Index | None:
        """What each name means, for hover and definition; built on first use after a check."""
        if self._index is None and self.analysis is not None:
            self._index = self._good_index = build_index(self.analysis, self.lines)
        return self._index

    def good_index(self) -> Index | None:
        """The index of the last text that parsed (the current one, or the one before you began
        typing what does not parse yet): the names in scope for completion."""
        if self._good_index is None and self._good is not None:
            self._good_index = build_index(*self._good)
        return self._good_index


def file_of(uri: str) -> str:
    """The file system path of a ``file:`` URI, else the URI itself."""
    from pygls.uris import to_fs_path

    path = to_fs_path(uri) if uri.startswith("file:") else None
    return os.path.normpath(path) if path else uri


def format_of(file: str, language_id: str | None) -> str:
    if language_id in formats.FORMATS:
        return language_id
    return formats.format_of(file)


class Documents:
    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}  # by URI
        self._parsed: dict[str, tuple[object, ir.Spec | SpecError]] = {}  # file -> (version key, result)
        self._reads: set[str] = set()
        self._graph: dict[str, list[str]] = {}

    # ---------------------------------------------------------------- the editor's documents

    def open(self, uri: str, text: str, version: int | None, language_id: str | None = None) -> Document:
        file = file_of(uri)
        doc = Document(uri, file, format_of(file, language_id), text, version)
        self.docs[uri] = doc
        return doc

    def change(self, uri: str, text: str, version: int | None) -> Document | None:
        doc = self.docs.get(uri)
        if doc is not None:
            doc.text, doc.version, doc.checked, doc._index = text, version, False, None
        return doc

    def close(self, uri: str) -> Document | None:
        return self.docs.pop(uri, None)

    def by_file(self, file: str) -> Document | None:
        return next((d for d in self.docs.values() if d.file == file), None)

    def dependents(self, doc: Document) -> list[Document]:
        """The open documents whose last analysis read ``doc`` through `use`."""
        return [d for d in self.docs.values() if d is not doc and doc.file in d.reads]

    # ---------------------------------------------------------------- checking

    def check(self, doc: Document) -> None:
        """Analyse ``doc``'s current text; a text that does not parse keeps its last good analysis."""
        doc.checked, doc._index = True, None
        if not doc.is_spec:
            doc.analysis, doc.diagnostics, doc.reads = None, [], set()
            return
        self._reads, self._graph = set(), {}
        try:
            spec = loads(doc.text, doc.format, file=doc.file)
        except SpecError as e:
            doc.analysis, doc.diagnostics = None, list(e.diagnostics)
            return
        analysis = analyse(spec, loader=self.read)
        doc.analysis, doc._good, doc._good_index = analysis, (analysis, doc.lines), None
        doc.graph = self._graph
        doc.graph[doc.file] = [use_target(doc.file, u.path) for u in spec.uses]
        # a `use` of a file that does not exist yet counts too: opening it checks this file again
        doc.reads = self._reads | {t for targets in doc.graph.values() for t in targets}
        doc.diagnostics = [d for d in analysis.diagnostics if not (d.code == _NO_MODEL and spec.model is None)]

    def read(self, path: str) -> ir.Spec:
        """The spec of a `use`d file: its open text, else the file, parsed once per version."""
        path = os.path.normpath(path)
        self._reads.add(path)
        open_doc = self.by_file(path)
        key: object
        if open_doc is not None:
            key = ("open", open_doc.version, len(open_doc.text))
        else:
            try:
                st = os.stat(path)
                key = ("disk", st.st_mtime_ns, st.st_size)
            except OSError:
                key = None
        cached = self._parsed.get(path)
        if cached is None or cached[0] != key or key is None:
            cached = (key, self._parse(path, open_doc))
            self._parsed[path] = cached
        result = cached[1]
        if isinstance(result, SpecError):
            raise result
        self._graph[path] = [use_target(path, u.path) for u in result.uses]
        return result

    @staticmethod
    def _parse(path: str, open_doc: Document | None) -> ir.Spec | SpecError:
        try:
            if open_doc is not None:
                return loads(open_doc.text, open_doc.format, file=path)
            return load(path)
        except SpecError as e:
            return e

    # ---------------------------------------------------------------- what an editor shows

    def shown(self, doc: Document) -> list[Diagnostic]:
        """The diagnostics to show in ``doc``: its own (those in files it uses moved onto the
        line that leads there), and those that the open files using it find in it."""
        out = [self._here(doc, d) for d in doc.diagnostics]
        for other in self.dependents(doc):
            out.extend(d for d in other.diagnostics if d.span.file == doc.file)
        seen: set[tuple[str, str, tuple[int, int, int, int]]] = set()
        unique = []
        for d in out:
            key = (d.code, d.message, (d.span.line, d.span.col, d.span.end_line, d.span.end_col))
            if key not in seen:
                seen.add(key)
                unique.append(d)
        return unique

    def _here(self, doc: Document, d: Diagnostic) -> Diagnostic:
        """A diagnostic of another file, shown in ``doc`` where it is instantiated or imported;
        one with no position (a plugin that failed to load), on the first line."""
        if d.span.file == doc.file and d.span.known:
            return d
        if not d.span.known:
            return _at(d, Span(file=doc.file, line=1, col=1))
        where = next((n.span for n in d.notes if n.span is not None and n.span.file == doc.file), None)
        where = where or self._use_leading_to(doc, d.span.file) or Span(file=doc.file, line=1, col=1)
        moved = _at(d, where, f"{os.path.basename(d.span.file)}:{d.span.line}:{d.span.col}: {d.message}")
        moved.notes = [Note(f"{d.message} here", d.span), *d.notes]
        return moved

    def _use_leading_to(self, doc: Document, target: str) -> Span | None:
        spec = doc.analysis.spec if doc.analysis is not None else None
        for use in spec.uses if spec is not None else ():
            if _reaches(doc.graph, use_target(doc.file, use.path), target):
                return use.span
        return None


def _at(d: Diagnostic, span: Span, message: str | None = None) -> Diagnostic:
    return Diagnostic(d.code, message or d.message, span, d.label, list(d.notes), d.help, d.severity)


def _reaches(graph: dict[str, list[str]], start: str, target: str) -> bool:
    todo, seen = [start], set()
    while todo:
        f = todo.pop()
        if f == target:
            return True
        if f not in seen:
            seen.add(f)
            todo.extend(graph.get(f, []))
    return False


def message_lines(d: Diagnostic) -> Sequence[str]:
    """A diagnostic as an editor shows it: the message, the label, notes and help."""
    lines = [d.message]
    if d.label:
        lines.append(d.label)
    lines += [f"note: {n.message}" for n in d.notes]
    if d.help:
        lines.append(f"help: {d.help}")
    return lines
