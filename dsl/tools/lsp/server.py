"""The language server: pygls wired to the documents, hover, completion, definition,
symbols and formatting.

Checks are rate-limited rather than delayed: a change that comes after a pause
is checked at once (after the messages already received, so that a burst
coalesces), and a change that comes within ``debounce`` seconds (50 ms by
default, ``initializationOptions.debounceMs``) of the end of the last check
waits until that much time has passed, with every other change that arrives
meanwhile. Then the changed files and the open files that ``use`` them are
checked, and their diagnostics published. A request that needs the current
text's analysis (hover, definition) checks first if a check is pending.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path

from dsl.language.diagnostics import Diagnostic, Span
from dsl.language.errors import DslError, SpecError
from dsl.language.source import loads
from dsl.tools.formatting import canonical
from dsl.tools.lsp.completion import complete_text, complete_yaml
from dsl.tools.lsp.documents import Document, Documents, message_lines
from dsl.tools.lsp.hover import hover_markdown
from dsl.tools.lsp.index import Hit, Index
from dsl.tools.lsp.positions import name_span, point_of, span_range
from dsl.tools.lsp.symbols import document_symbols

DEBOUNCE = 0.050  # seconds: at most one check per this long after the previous one ends
SEVERITY = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning}
R = TypeVar("R")


class DslServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("dsl", _version(), text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.documents = Documents()
        self.debounce = DEBOUNCE
        self._dirty: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last = float("-inf")  # when the last check ended (the event loop's clock)

    # ---------------------------------------------------------------- checking and publishing

    def schedule(self, uri: str) -> None:
        self._dirty.add(uri)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, self._last + self.debounce - loop.time()), self.flush)

    def flush(self) -> None:
        """Check every changed document, then publish what changed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dirty, self._dirty = self._dirty, set()
        docs = [self.documents.docs[u] for u in dirty if u in self.documents.docs]
        if docs:
            self.check_and_publish(docs)
            self._last = asyncio.get_running_loop().time()

    def check_and_publish(self, docs: Iterable[Document]) -> None:
        checked: dict[str, Document] = {}
        for doc in docs:
            for d in [doc, *self.documents.dependents(doc)]:
                if d.uri not in checked:
                    self.documents.check(d)
                    checked[d.uri] = d
        shown = dict(checked)
        for d in checked.values():  # the files they use show what they find there
            for f in d.reads:
                used = self.documents.by_file(f)
                if used is not None:
                    shown.setdefault(used.uri, used)
        for d in shown.values():
            self.publish(d)

    def publish(self, doc: Document, diagnostics: list[Diagnostic] | None = None) -> None:
        shown = self.documents.shown(doc) if diagnostics is None else diagnostics
        lines = self.lines(doc)
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            doc.uri, [self.to_lsp(d, lines) for d in shown], doc.version))

    def to_lsp(self, d: Diagnostic, lines: list[str]) -> types.Diagnostic:
        related = [types.DiagnosticRelatedInformation(self.location(n.span), n.message)
                   for n in d.notes if n.span is not None and n.span.known]
        return types.Diagnostic(
            range=span_range(d.span, lines, self.workspace.position_codec),
            message="\n".join(message_lines(d)),
            severity=SEVERITY.get(d.severity, types.DiagnosticSeverity.Information),
            code=d.code, source="dsl", related_information=related or None,
        )

    def lines(self, doc: Document) -> list[str]:
        return doc.text.splitlines(keepends=True)

    def location(self, span: Span) -> types.Location:
        doc = self.documents.by_file(span.file)
        if doc is not None:
            return types.Location(doc.uri, span_range(span, self.lines(doc), self.workspace.position_codec))
        lines = _read_lines(span.file)
        return types.Location(from_fs_path(span.file) or span.file,
                              span_range(span, lines, self.workspace.position_codec))

    def current(self, uri: str) -> Document | None:
        """The document, checked if a check of it is pending."""
        doc = self.documents.docs.get(uri)
        if doc is not None and not doc.checked:
            self.flush()
            if not doc.checked:
                self.check_and_publish([doc])
        return doc

    def hit(self, params: types.TextDocumentPositionParams) -> tuple[Document, Index, Hit] | None:
        """What is at the position, in the current text's analysis."""
        doc = self.current(params.text_document.uri)
        index = doc.index() if doc is not None else None
        if doc is None or index is None:
            return None
        hit = index.at(point_of(params.position, self.lines(doc), self.workspace.position_codec))
        return (doc, index, hit) if hit is not None else None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dsl")
    except PackageNotFoundError:
        return "0"


def _read_lines(path: str) -> list[str]:
    from dsl.language.source import read_source

    try:
        return read_source(path).splitlines(keepends=True)
    except DslError:
        return []


def guarded(default: Any = None) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """A handler that never lets an exception reach the editor: it is logged (the
    editor's output panel) and the request gets ``default``."""

    def wrap(fn: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fn)
        def run(ls: DslServer, params: Any) -> R:
            try:
                return fn(ls, params)
            except Exception:  # a bug must not take the server down
                ls.window_log_message(types.LogMessageParams(types.MessageType.Error,
                                                             f"dsl lsp: {fn.__name__} failed\n{traceback.format_exc()}"))
                return default

        return run

    return wrap


server = DslServer()


@server.feature(types.INITIALIZE)
@guarded()
def initialize(ls: DslServer, params: types.InitializeParams) -> None:
    options = params.initialization_options if isinstance(params.initialization_options, dict) else {}
    debounce = options.get("debounceMs")
    if isinstance(debounce, int | float) and not isinstance(debounce, bool) and 0 <= debounce <= 10_000:
        ls.debounce = debounce / 1000


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
@guarded()
def did_open(ls: DslServer, params: types.DidOpenTextDocumentParams) -> None:
    item = params.text_document
    doc = ls.documents.open(item.uri, item.text, item.version, item.language_id)
    ls.check_and_publish([doc])


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
@guarded()
def did_change(ls: DslServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.documents.change(uri, ls.workspace.get_text_document(uri).source, params.text_document.version)
    ls.schedule(uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
@guarded()
def did_close(ls: DslServer, params: types.DidCloseTextDocumentParams) -> None:
    doc = ls.documents.close(params.text_document.uri)
    if doc is None:
        return
    ls.publish(doc, [])
    dependents = [d for d in ls.documents.docs.values() if doc.file in d.reads]
    if dependents:  # they read the file from disk now
        ls.check_and_publish(dependents)


@server.feature(types.TEXT_DOCUMENT_HOVER)
@guarded()
def hover(ls: DslServer, params: types.HoverParams) -> types.Hover | None:
    found = ls.hit(params)
    return _hover(ls, *found) if found is not None else None


def _hover(ls: DslServer, doc: Document, index: Index, hit: Hit) -> types.Hover | None:
    text = hover_markdown(hit, index)
    if text is None:
        return None
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text),
                       span_range(hit.span, ls.lines(doc), ls.workspace.position_codec))


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["(", ",", "=", "["]))
@guarded()
def completion(ls: DslServer, params: types.CompletionParams) -> types.CompletionList | None:
    doc = ls.documents.docs.get(params.text_document.uri)
    if doc is None or not doc.is_spec:
        return None
    if doc.format == "yaml":
        line, col = point_of(params.position, ls.lines(doc), ls.workspace.position_codec)
        items = complete_yaml(doc.lines, line - 1, col - 1, doc.good_index())
    else:
        offset = ls.workspace.get_text_document(doc.uri).offset_at_position(params.position)
        items = complete_text(doc.text[:offset], doc.good_index())
    return types.CompletionList(is_incomplete=False, items=items)


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
@guarded()
def definition(ls: DslServer, params: types.DefinitionParams) -> types.Location | None:
    found = ls.hit(params)
    return _definition(ls, *found) if found is not None else None


def _definition(ls: DslServer, doc: Document, index: Index, hit: Hit) -> types.Location | None:
    """A name's binding, a param in its own file, a `use`d file, a user block's name."""
    if hit.binding is not None:
        span = hit.binding.span
        if span.file != doc.file:  # an imported param: its name in its own file
            span = name_span(_read_lines(span.file), span, hit.binding.name, "param")
        return ls.location(span)
    if hit.path is not None:
        return types.Location(from_fs_path(hit.path) or hit.path, types.Range(types.Position(0, 0), types.Position(0, 0)))
    block = index.blocks.get(hit.func) if hit.func is not None and hit.keyword is None else None
    return ls.location(block.name_span or block.span) if block is not None else None


@server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@guarded()
def symbols(ls: DslServer, params: types.DocumentSymbolParams) -> list[types.DocumentSymbol] | None:
    doc = ls.current(params.text_document.uri)
    if doc is None or doc.analysis is None:
        return None
    lines = ls.lines(doc)
    return document_symbols(doc.analysis.spec, lambda s: span_range(s, lines, ls.workspace.position_codec))


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
@guarded()
def formatting(ls: DslServer, params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
    doc = ls.documents.docs.get(params.text_document.uri)
    if doc is None or not doc.is_spec:
        return None
    try:
        text = canonical(loads(doc.text, doc.format, file=doc.file))
    except (SpecError, DslError):  # only a spec that parses is formatted; its errors are shown already
        return None
    if text == doc.text:
        return []
    lines = ls.lines(doc)
    end = types.Position(len(lines), 0)
    return [types.TextEdit(types.Range(types.Position(0, 0), end), text)]


def serve() -> None:
    """Speak the protocol on stdin and stdout until the editor says exit."""
    logging.basicConfig(level=logging.WARNING if not os.environ.get("DSL_LSP_DEBUG") else logging.DEBUG)
    server.start_io()
