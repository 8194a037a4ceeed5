"""`dsl lsp`: a real client (pytest-lsp) speaking JSON-RPC to the server process.

One server serves the module's tests (each opens its own files under a fresh
folder); the shutdown test starts its own and checks that it exits cleanly.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytest_lsp
from conftest import SPECS
from lsprotocol import types
from pygls.protocol import default_converter
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features


class Client(LanguageClient):
    """pytest-lsp's client, keeping every diagnostics notification in order."""

    def __init__(self) -> None:
        super().__init__(converter_factory=default_converter)
        self.published: list[types.PublishDiagnosticsParams] = []


def _publish(client: Client, params: types.PublishDiagnosticsParams) -> None:
    client.diagnostics[params.uri] = params.diagnostics
    client.published.append(params)


def make_client() -> Client:
    client = Client()
    register_lsp_features(client, {**DEFAULT_CLIENT_FEATURES, types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: _publish})
    return client


SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "dsl.cli", "lsp"], client_factory=make_client)
asyncio_test = pytest.mark.asyncio(loop_scope="module")  # the module's tests share one server

CLASSIFIER = """\
param hidden = 16

model Classifier(classes: int = 10) {
    input x: [B, 64]
    h = relu(Linear(x, out=hidden))
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}
"""


@pytest_lsp.fixture(scope="module", config=SERVER)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(capabilities=client_capabilities("visual-studio-code")))
    yield
    await lsp_client.shutdown_session()


# --------------------------------------------------------------------------- helpers


async def open_doc(client: Client, path: Path, text: str, language: str = "dsl") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    uri = path.as_uri()
    since = len(client.published)
    client.text_document_did_open(types.DidOpenTextDocumentParams(types.TextDocumentItem(uri, language, 1, text)))
    await diagnostics_of(client, uri, 1, since)
    return uri


async def change(client: Client, uri: str, text: str, version: int) -> list[types.Diagnostic]:
    since = len(client.published)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=version, uri=uri),
        [types.TextDocumentContentChangeWholeDocument(text)]))
    return await diagnostics_of(client, uri, version, since)


async def diagnostics_of(client: Client, uri: str, version: int, since: int) -> list[types.Diagnostic]:
    """The first diagnostics published for ``uri`` at ``version`` after the ``since``-th one."""
    for _ in range(3000):
        for params in client.published[since:]:
            if params.uri == uri and params.version == version:
                return list(params.diagnostics)
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no diagnostics for {uri} version {version}")


def position_of(text: str, needle: str, offset: int = 0, nth: int = 0) -> types.Position:
    """The position of the ``nth`` ``needle`` in ``text`` (plus ``offset`` characters)."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    at += offset
    line = text.count("\n", 0, at)
    return types.Position(line, at - (text.rfind("\n", 0, at) + 1))


async def hover(client: Client, uri: str, position: types.Position) -> str:
    result = await client.text_document_hover_async(types.HoverParams(types.TextDocumentIdentifier(uri), position))
    assert result is not None
    assert isinstance(result.contents, types.MarkupContent)
    return result.contents.value


async def complete(client: Client, uri: str, text: str, version: int) -> dict[str, types.CompletionItem]:
    """Completions at the end of ``text`` (the document becomes ``text``)."""
    await change(client, uri, text, version)
    end = position_of(text + "\0", "\0")
    result = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri), end))
    items = result.items if isinstance(result, types.CompletionList) else result or []
    return {i.label: i for i in items}


# --------------------------------------------------------------------------- diagnostics


@asyncio_test
async def test_a_shape_error_appears_under_the_argument_and_clears_after_the_fix(client: Client,
                                                                                  tmp_path: Path):
    uri = await open_doc(client, tmp_path / "c.dsl", CLASSIFIER)
    bad = CLASSIFIER.replace("logits = Linear(h,", "z = Linear(x, out=32)\n    logits = Linear(h + z,")
    diags = await change(client, uri, bad, 2)
    assert [d.code for d in diags] == ["E0301"]
    d = diags[0]
    assert (d.range.start, d.range.end) == (position_of(bad, "h + z"), position_of(bad, "h + z", 5))
    assert d.severity == types.DiagnosticSeverity.Error and d.source == "dsl"
    assert d.message.splitlines() == [
        "shapes of `+` do not broadcast",
        "[B, 16] + [B, 32]",
        "note: `h` is [B, 16] because relu keeps the shape (line 5)",
        "note: `z` is [B, 32] because Linear(out=32) maps the last dim to 32 (line 6)",
    ]
    assert await change(client, uri, CLASSIFIER, 3) == []


@asyncio_test
async def test_an_unknown_block_gets_did_you_mean_at_its_name(client: Client, tmp_path: Path):
    bad = CLASSIFIER.replace("logits = Linear(h", "logits = Linaer(h")
    uri = await open_doc(client, tmp_path / "typo.dsl", CLASSIFIER)
    (d,) = await change(client, uri, bad, 2)
    assert d.code == "E0201" and "did you mean `Linear`" in d.message
    assert d.range.start == position_of(bad, "Linaer") and d.range.end == position_of(bad, "Linaer", 6)


@asyncio_test
async def test_a_syntax_error_is_a_diagnostic_too(client: Client, tmp_path: Path):
    uri = await open_doc(client, tmp_path / "syntax.dsl", CLASSIFIER)
    (d,) = await change(client, uri, CLASSIFIER.replace("h = relu(", "h = relu(("), 2)
    assert d.code == "E0101"


@asyncio_test
async def test_columns_count_utf16_code_units_as_the_protocol_does(client: Client, tmp_path: Path):
    text = CLASSIFIER.replace("param hidden = 16", 'param label = "\U0001F600\U0001F600"; param hidden = bogus')
    uri = await open_doc(client, tmp_path / "emoji.dsl", CLASSIFIER)
    (d, *_) = await change(client, uri, text, 2)
    assert d.code == "E0201"
    start = text.splitlines()[0].index("bogus") + 2  # two characters that are two UTF-16 units each
    assert (d.range.start.line, d.range.start.character, d.range.end.character) == (0, start, start + 5)


@asyncio_test
async def test_files_that_use_the_edited_file_are_checked_again(client: Client, tmp_path: Path):
    lib = "block Proj(width: int) {\n    input x: [..., F]\n    y = Linear(x, out=width)\n    output y\n}\n"
    main = ('use "lib.dsl"\n\nmodel M {\n    input x: [B, 8]\n    y = Proj(x, width=4)\n'
            "    output y: [B, 4]\n}\n")
    lib_uri = await open_doc(client, tmp_path / "lib.dsl", lib)
    main_uri = await open_doc(client, tmp_path / "main.dsl", main)
    assert not client.diagnostics[lib_uri] and not client.diagnostics[main_uri]
    # an unsaved edit of the library breaks the model that uses it
    since = len(client.published)
    await change(client, lib_uri, lib.replace("out=width", "out=width * 2"), 2)
    shown = await diagnostics_of(client, main_uri, 1, since)
    assert [d.code for d in shown] == ["E0304"]
    since = len(client.published)
    await change(client, lib_uri, lib, 3)
    assert await diagnostics_of(client, main_uri, 1, since) == []


@asyncio_test
async def test_a_yaml_spec_is_checked_with_yaml_positions(client: Client, tmp_path: Path):
    text = (SPECS / "classifier.yaml").read_text()
    uri = await open_doc(client, tmp_path / "c.yaml", text, "yaml")
    bad = text.replace("op: relu", "op: rleu")
    (d,) = await change(client, uri, bad, 2)
    assert d.code == "E0201" and d.range.start == position_of(bad, "rleu")
    assert "`h` is [B, 16] because Linear(out=16)" in await hover(client, uri, position_of(bad, "id: h", 4))


@asyncio_test
async def test_yaml_that_is_not_a_spec_is_left_alone(client: Client, tmp_path: Path):
    uri = (tmp_path / "ci.yaml").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri, "yaml", 1, "on: [push]\njobs: {}\n")))
    assert await diagnostics_of(client, uri, 1, 0) == []


# --------------------------------------------------------------------------- hover


@asyncio_test
async def test_hover_shows_the_symbolic_shape_and_where_it_came_from(client: Client, tmp_path: Path):
    uri = await open_doc(client, tmp_path / "h.dsl", CLASSIFIER)
    text = await hover(client, uri, position_of(CLASSIFIER, "h = relu"))
    assert "h: [B, 16] float" in text
    assert "`h` is [B, 16] because relu keeps the shape (line 5)" in text
    use = await hover(client, uri, position_of(CLASSIFIER, "Linear(h", len("Linear(")))
    assert "h: [B, 16] float" in use
    assert "param hidden = 16" in await hover(client, uri, position_of(CLASSIFIER, "out=hidden", 4))


@asyncio_test
async def test_hover_on_a_name_says_why_its_shape_is_what_it_is(client: Client, tmp_path: Path):
    text = (SPECS / "protogat.dsl").read_text()
    uri = await open_doc(client, tmp_path / "protogat.dsl", text)
    assert not client.diagnostics[uri]
    shown = await hover(client, uri, position_of(text, "h = GAT"))
    assert "h: [N, 64] float" in shown
    assert "because GAT(out=16, heads=4) concatenates 4 heads (line 15)" in shown
    assert "N = 34 (from the data)" in shown
    block = await hover(client, uri, position_of(text, "GAT(x"))
    assert "GAT(x, edge_index, out, edge_attr=null, heads=1" in block and "[N, F], [2, E] long" in block
    assert "paper:" in block and "here: `[N, 64]`" in block
    assert "default 1" in await hover(client, uri, position_of(text, "heads=heads", 1))
    assert "edge_index: [2, E] long" in await hover(client, uri, position_of(text, "edge_index: ["))


# --------------------------------------------------------------------------- completion


@asyncio_test
async def test_completion_of_blocks_hyperparameters_and_names(client: Client, tmp_path: Path):
    head = CLASSIFIER.split("    logits")[0]
    uri = await open_doc(client, tmp_path / "comp.dsl", CLASSIFIER)
    items = await complete(client, uri, head + "    logits = Lin", 2)
    assert "Linear" in items and "relu" not in items
    assert (items["Linear"].detail or "").startswith("Linear(x, out, bias=true")
    items = await complete(client, uri, head + "    logits = Linear(x, ", 3)
    assert items["out"].detail == "int required" and items["out"].insert_text == "out="
    assert items["bias"].detail == "bool = true"
    assert {"h", "x"} <= set(items) and items["h"].detail == "tensor [B, 16]"
    items = await complete(client, uri, head + "    logits = Linear(h, out=4, ", 4)
    assert "out" not in items and "bias" in items


@asyncio_test
async def test_completion_in_the_train_section(client: Client, tmp_path: Path):
    uri = await open_doc(client, tmp_path / "train.dsl", CLASSIFIER)
    train = "\ntrain {\n    data = digits(batch=64)\n    loss = cross_entropy(logits, y)\n}\n"
    await change(client, uri, CLASSIFIER + train, 2)  # the last text that parses gives the names in scope
    items = await complete(client, uri, CLASSIFIER + "\ntrain {\n    data = digits(batch=64)\n    ", 3)
    assert {"loss", "epochs", "optimizer", "metrics"} <= set(items) and "data" not in items
    items = await complete(client, uri, CLASSIFIER + "\ntrain {\n    data = ", 4)
    assert {"digits", "karate", "iris"} <= set(items)
    items = await complete(client, uri, CLASSIFIER + "\ntrain {\n    data = digits(batch=64)\n    metrics = [", 5)
    assert "accuracy" in items and "cross_entropy" in items
    items = await complete(client, uri, CLASSIFIER + "\ntrain {\n    data = digits(batch=64)\n    loss = cross_entropy(", 6)
    assert {"logits", "y", "label_smoothing"} <= set(items)


# --------------------------------------------------------------------------- definition, symbols, formatting


@asyncio_test
async def test_definition_jumps_to_blocks_names_and_used_files(client: Client, tmp_path: Path):
    text = (SPECS / "protogat.dsl").read_text()
    uri = await open_doc(client, tmp_path / "def.dsl", text)

    async def goto(position: types.Position) -> types.Location:
        result = await client.text_document_definition_async(
            types.DefinitionParams(types.TextDocumentIdentifier(uri), position))
        assert isinstance(result, types.Location)
        return result

    expert = await goto(position_of(text, "expert=Expert", len("expert=")))
    assert expert.uri == uri and expert.range.start == position_of(text, "Expert(dim")
    h = await goto(position_of(text, "h = elu(h)", len("h = elu(")))
    assert h.range.start == position_of(text, "h = GAT")
    hidden = await goto(position_of(text, "out=hidden", 4))
    assert hidden.range.start == position_of(text, "hidden = 16")
    lib = "param width = 8\n"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "lib.dsl").write_text(lib)
    user = 'use "sub/lib.dsl"\n\nmodel M {\n    input x: [B, 4]\n    y = Linear(x, out=width)\n    output y\n}\n'
    uri = await open_doc(client, tmp_path / "user.dsl", user)
    used = await goto(position_of(user, "sub/lib"))
    assert used.uri == (tmp_path / "sub" / "lib.dsl").as_uri()
    width = await goto(position_of(user, "out=width", 4))
    assert width.uri == used.uri and width.range.start == types.Position(0, 6)


@asyncio_test
async def test_document_symbols_list_blocks_model_and_train(client: Client, tmp_path: Path):
    text = (SPECS / "protogat.dsl").read_text()
    uri = await open_doc(client, tmp_path / "sym.dsl", text)
    result = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(types.TextDocumentIdentifier(uri)))
    names = {s.name: s for s in result or [] if isinstance(s, types.DocumentSymbol)}
    assert {"hidden", "Expert", "ProtoGAT", "train"} <= set(names)
    assert "logits" in {c.name for c in names["ProtoGAT"].children or []}
    assert {"data", "loss"} <= {c.name for c in names["train"].children or []}


@asyncio_test
async def test_formatting_gives_the_canonical_text(client: Client, tmp_path: Path):
    messy = CLASSIFIER.replace("h = relu(Linear(x, out=hidden))", "h=relu( Linear(x,out = hidden) )")
    uri = await open_doc(client, tmp_path / "fmt.dsl", messy)
    edits = await client.text_document_formatting_async(types.DocumentFormattingParams(
        types.TextDocumentIdentifier(uri), types.FormattingOptions(tab_size=4, insert_spaces=True)))
    assert edits is not None and len(edits) == 1 and edits[0].new_text == CLASSIFIER
    await change(client, uri, CLASSIFIER, 2)
    again = await client.text_document_formatting_async(types.DocumentFormattingParams(
        types.TextDocumentIdentifier(uri), types.FormattingOptions(tab_size=4, insert_spaces=True)))
    assert again is not None and len(again) == 0


# --------------------------------------------------------------------------- the process


def test_shutdown_is_clean_and_exit_code_zero() -> None:
    async def session() -> int | None:
        lsp = pytest_lsp.make_test_lsp_client()
        await lsp.start_io(sys.executable, "-m", "dsl.cli", "lsp", "--stdio")
        await lsp.initialize_session(types.InitializeParams(capabilities=client_capabilities("neovim")))
        await lsp.shutdown_session()
        server = lsp._server
        await lsp.stop()
        return server.returncode if server is not None else None

    assert asyncio.run(session()) == 0


PURITY = textwrap.dedent("""
    import sys
    from dsl.tools.lsp.server import server
    from dsl.tools.lsp.completion import complete_text
    from dsl.tools.lsp.hover import hover_markdown
    for path in {paths!r}:
        text = open(path).read()
        doc = server.documents.open("file://" + path, text, 1)
        server.documents.check(doc)
        index = doc.index()
        for hit in index.hits:
            hover_markdown(hit, index)
        complete_text(text, index)
    bad = [m for m in ("torch", "torch_geometric") if m in sys.modules]
    print("IMPORTED:" + ",".join(bad))
""")


def test_the_server_never_imports_torch() -> None:
    paths = sorted(str(p) for p in SPECS.glob("*.dsl")) + sorted(str(p) for p in SPECS.glob("*.yaml"))
    out = subprocess.run([sys.executable, "-c", PURITY.format(paths=paths)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "IMPORTED:"


# --------------------------------------------------------------------------- completion contexts (in process)


def _labels(items: list[types.CompletionItem]) -> set[str]:
    return {i.label for i in items}


@pytest.mark.parametrize("before, expected, absent", [
    ("", {"param", "model", "train"}, {"input"}),
    ("model M(classes: ", {"int", "float", "bool", "str"}, set()),
    ("model M {\n    ", {"input", "output", "repeat"}, {"param"}),
    ("model M {\n    input x: [B, 8] ", {"long", "bool"}, set()),
    ("model M {\n    input x: [B, 8]\n    h = cat([x, ", {"x"}, {"float"}),
    ("model M {\n    input x: [B, 8]\n    repeat 2 { h = relu(x) }\n    y = relu(", {"x", "h"}, set()),
    ('use "lib', set(), {"param"}),
    ("model M {\n    # a Lin", set(), {"Linear"}),
    ("train {\n    optimizer = adam(", {"lr", "weight_decay"}, {"momentum"}),
    ("train {\n    schedule = ", {"cosine", "step", "warmup"}, set()),
])
def test_completion_reads_where_the_cursor_is(before: str, expected: set[str], absent: set[str]) -> None:
    from dsl.tools.lsp.completion import complete_text

    labels = _labels(complete_text(before, None))
    assert expected <= labels and not absent & labels, labels


@pytest.mark.parametrize("line, expected", [
    ("    - {id: h, op: Lin", {"Linear"}),
    ("    - {id: h, op: Linear, in: [x], with: {out: 4, ", {"bias"}),
    ("  epo", {"epochs"}),
    ("  optimizer: ad", {"adam", "adamw"}),
])
def test_yaml_completion(line: str, expected: set[str]) -> None:
    from dsl.tools.lsp.completion import complete_yaml

    head = (SPECS / "classifier.yaml").read_text().split("train:")[0]
    lines = (head + ("train:\n" if not line.startswith("    -") else "") + line).splitlines()
    labels = _labels(complete_yaml(lines, len(lines) - 1, len(lines[-1]), None))
    assert expected <= labels and "out" not in labels, labels
