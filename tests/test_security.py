"""Untrusted specs and files: resource guards and no code execution.

* Resource guards (dsl/budget.py): each block's static parameter count equals
  the built module's; a model over ``max_params`` is refused before anything
  is allocated, with the estimate and the biggest node in the diagnostic.
* No code execution: no eval/exec/unsafe deserialisation anywhere in the
  package (checked on the syntax tree), safe YAML (tags refused, alias bombs
  stopped), injections through names, strings and params rejected or inert,
  ``use`` resolved next to the importing file and URLs refused, checkpoints
  and data read with safetensors / ``weights_only=True``.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import dsl
from dsl.api import analyse
from dsl.building.compiler import count_parameters
from dsl.checking.budget import DEFAULT_MAX_PARAMS, MAX_DIM, estimate
from dsl.language.errors import RunError, SpecError

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


# --------------------------------------------------------------------------- parameter counts


def _one_block(inputs: str, call: str, outputs: int = 1, prelude: str = "") -> str:
    targets = ", ".join(f"y{i}" for i in range(outputs))
    outs = "\n".join(f"    output y{i}" for i in range(outputs))
    return f"{prelude}model M {{\n{inputs}\n    {targets} = {call}\n{outs}\n}}\n"


X = "    input x: [B, 6]"
SEQ = "    input q: [B, T, 8]\n    input k: [B, S, 5]\n    input v: [B, S, 3]"
GRAPH = "    input x: [N, 6]\n    input edge_index: [2, E] long\n    input edge_attr: [E, 3]"
SET = "    input x: [B, S, 8]\n    input s: [B, R, 6]\n    input v: [B, R, 5]"
EXPERT = "block Expert(dim: int) {\n    input x: [..., dim]\n    y = Linear(gelu(Linear(x, out=5)), out=dim)\n    output y\n}\n"

BLOCK_CASES = [
    (X, "Linear(x, out=5)"),
    (X, "Linear(x, out=5, bias=false)"),
    (X, "MLP(x, hidden=7, out=3)"),
    (X, "MLP(x, hidden=7, out=3, layers=1)"),
    (X, "MLP(x, hidden=7, out=3, layers=4, bias=false)"),
    (X, "LayerNorm(x)"),
    (X, "LayerNorm(x, affine=false)"),
    (X, "BatchNorm(x)"),
    (X, "Dropout(x, p=0.1)"),
    ("    input i: [B, T] long", "Embedding(i, num=11, dim=4)"),
    (SEQ, "MultiheadAttention(q, heads=2)"),
    (SEQ, "MultiheadAttention(q, k=k, v=v, heads=4)"),
    (SEQ, "MultiheadAttention(q, k=k, heads=2, bias=false)"),
    (GRAPH, "GAT(x, edge_index, out=4)"),
    (GRAPH, "GAT(x, edge_index, out=4, heads=3, concat=false, residual=true)"),
    (GRAPH, "GAT(x, edge_index, edge_attr=edge_attr, out=4, heads=2, edge_dim=3, bias=false)"),
    (GRAPH, "GATv2(x, edge_index, out=4, heads=2)"),
    (GRAPH, "GATv2(x, edge_index, out=4, heads=2, share_weights=true, residual=true, concat=false)"),
    (GRAPH, "GATv2(x, edge_index, edge_attr=edge_attr, out=4, edge_dim=3, bias=false)"),
    (SET, "Hopfield(x)"),
    (SET, "Hopfield(x, stored=s, values=v, heads=2, out=7)"),
    (SET, "Hopfield(x, stored=s, heads=2, head_dim=3, value_dim=5, bias=false)"),
    (SET, "Hopfield(x, normalize_state=false, normalize_affine=false)"),
    (SET, "Hopfield(x, stored=x, project=false)"),
    (SET, "HopfieldPooling(x, queries=3, heads=2)"),
    (SET, "HopfieldLayer(x, patterns=5)"),
    (SET, "HopfieldLayer(x, patterns=5, separate_values=true, out=4)"),
    (X, "PrototypeHead(x, classes=3, per_class=2)"),
]
MULTI_CASES = [
    (X, "Gate(x, experts=4)", 2, ""),
    (X, "Gate(x, experts=4, k=1, noisy=false)", 2, ""),
    (X, "MoE(x, experts=3)", 2, ""),
    (X, "MoE(x, experts=3, out=4, noisy=false)", 2, ""),
    (X, "MoE(x, experts=2, expert=MLP(hidden=9, out=6))", 2, ""),
    (X, "MoE(x, experts=3, expert=Expert(dim=6))", 2, EXPERT),
]


def _compare(text: str) -> tuple[int, int]:
    analysis = analyse(dsl.loads(text), {"B": 2, "T": 3, "S": 4, "R": 4, "N": 5, "E": 7})
    prog, diags = analysis.program, analysis.diagnostics
    assert not [d for d in diags if d.severity == "error"], diags
    est = estimate(prog)
    assert est.exact, est.unknown
    model = dsl.compile(dsl.loads(text), {"B": 2, "T": 3, "S": 4, "R": 4, "N": 5, "E": 7})
    return est.params, count_parameters(model)


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c[1] for c in BLOCK_CASES])
def test_block_count_matches_built_module(case):
    inputs, call = case
    static, built = _compare(_one_block(inputs, call))
    assert static == built


@pytest.mark.parametrize("case", MULTI_CASES, ids=[c[1] for c in MULTI_CASES])
def test_multi_output_count_matches_built_module(case):
    inputs, call, outputs, prelude = case
    static, built = _compare(_one_block(inputs, call, outputs, prelude))
    assert static == built > 0


def test_every_builtin_block_declares_a_count():
    from dsl.language.registry import load

    missing = [n for n, d in load().items() if d.kind == "block" and d.source == "builtin" and d.count_params is None]
    assert not missing


SPEC_DIMS = {"siamese.dsl": {"F": 12}}


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.dsl")) + sorted((SPECS / "gallery").glob("*.dsl")),
                         ids=lambda p: str(p.relative_to(SPECS)))
def test_example_spec_estimate_is_exact(path: Path):
    analysis = analyse(dsl.load(path), SPEC_DIMS.get(path.name, {}))
    prog, diags = analysis.program, analysis.diagnostics
    assert not [d for d in diags if d.severity == "error"]
    est = estimate(prog)
    model = dsl.compile(path, SPEC_DIMS.get(path.name, {}))
    assert est.exact and est.params == count_parameters(model)
    assert est.activation_bytes > 0


# --------------------------------------------------------------------------- refusing large models

BIG = """\
model Big {
    input x: [B, 4096]
    h = Linear(x, out=100000)
    y = Linear(h, out=100000)
    output y
}
"""


def test_large_model_refused_before_allocation(monkeypatch):
    import dsl.building.compiler

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(dsl.building.compiler, "build_program", no_build)
    with pytest.raises(SpecError) as info:
        dsl.compile(dsl.loads(BIG, file="big.dsl"))
    (d,) = info.value.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("E0802", 4, 9)  # the biggest contributor
    assert "10,409,800,000 parameters" in d.message and f"{DEFAULT_MAX_PARAMS:,}" in d.message
    assert "Linear(out=100000) holds 10,000,100,000 parameters" in d.label
    assert [n.span.line for n in d.notes] == [4, 3]  # the top contributors, biggest first
    assert "--max-params" in (d.help or "")


def test_max_params_raises_and_lowers_the_limit():
    spec = dsl.loads(BIG)
    assert dsl.check(spec, max_params=2 * 10**10) == []
    small = dsl.loads(BIG.replace("100000", "10"))
    assert dsl.check(small) == []
    diags = dsl.check(small, max_params=100)
    assert [d.code for d in diags] == ["E0802"]
    with pytest.raises(SpecError):
        dsl.compile(small, max_params=100)
    assert isinstance(dsl.compile(small, max_params=10**6), torch.nn.Module)


def test_unknown_sizes_give_a_lower_bound():
    spec = dsl.loads("model M {\n    input x: [B, F]\n    h = Linear(x, out=50000)\n    y = Linear(h, out=50000)\n"
                     "    output y\n}\n")
    analysis = analyse(spec)
    prog, diags = analysis.program, analysis.diagnostics
    est = estimate(prog)
    assert not est.exact and est.params == 50000 * 50000 + 50000  # the first Linear waits for F
    assert [d.code for d in diags] == ["E0802"]  # the known part alone is over the limit
    assert "at least" in diags[0].message


def test_activation_memory_and_dimension_bounds():
    spec = dsl.loads("model M {\n    input x: [1000000, 8]\n    h = Linear(x, out=100000)\n    output h\n}\n")
    (d,) = dsl.check(spec)
    assert (d.code, d.span.line) == ("E0802", 3) and "GiB" in d.message
    (d,) = dsl.check(dsl.loads("model M {\n    input x: [N, 8]\n    output x\n}\n"), {"N": MAX_DIM + 1})
    assert (d.code, d.span.line) == ("E0801", 2) and f"{MAX_DIM:,}" in d.message


def test_cli_max_params(tmp_path: Path):
    path = tmp_path / "big.dsl"
    path.write_text(BIG)
    code, _, err = run_cli("check", str(path))
    assert code == 1 and "error[E0802]" in err and "Traceback" not in err
    code, _, err = run_cli("check", str(path), "--max-params", "2e10")
    assert code == 0, err


# --------------------------------------------------------------------------- no code execution

PACKAGE_DIRS = [ROOT / "dsl", ROOT / "blocks"]
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "execfile", "input", "breakpoint"}
FORBIDDEN_ATTRS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "loads"), ("marshal", "load"),
    ("yaml", "load"), ("yaml", "load_all"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("yaml", "Loader"),
    ("yaml", "UnsafeLoader"), ("yaml", "FullLoader"), ("os", "system"), ("os", "popen"), ("os", "execv"),
    ("os", "execvp"), ("shelve", "open"), ("dill", "load"), ("dill", "loads"), ("jsonpickle", "decode"),
}
# importlib.import_module of a computed name, reviewed: none of these names come from spec text.
IMPORT_MODULE_OK = {
    "blocks/activations.py",  # torch functions named by string literals in the block declarations
    "dsl/exporting/python.py",  # the modules of Python objects the compiled graph calls
    "dsl/language/formats.py",  # the front ends named in its own table of formats
    "dsl/language/registry.py",  # the block library's package and its modules (the plugin pattern)
}


def _python_files() -> list[Path]:
    return sorted(p for d in PACKAGE_DIRS for p in d.rglob("*.py"))


def _call_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assigned: dict[str, list[ast.expr]] = {}  # name -> values assigned to it anywhere in the file
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Name):
                    assigned.setdefault(t.id, []).append(n.value)
        if isinstance(n, ast.ClassDef):  # a subclass of the safe loader is as safe as its bases
            assigned.setdefault(n.name, []).extend(n.bases or [ast.Constant("object")])
    problems = []
    rel = path.relative_to(ROOT).as_posix()
    for node in ast.walk(tree):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_NAMES and f.id not in own:
                problems.append(f"{where}: {f.id}(...)")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                pair = (f.value.id, f.attr)
                if pair in FORBIDDEN_ATTRS:
                    problems.append(f"{where}: {pair[0]}.{pair[1]}(...)")
                if pair in (("torch", "load"),) and not any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                ):
                    problems.append(f"{where}: torch.load without weights_only=True")
                if pair in (("np", "load"), ("numpy", "load")) and not any(
                    k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                    for k in node.keywords
                ):
                    problems.append(f"{where}: np.load without allow_pickle=False")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "subprocess":
                argv = node.args[0] if node.args else None
                if not isinstance(argv, ast.List) or any(k.arg == "shell" for k in node.keywords):
                    problems.append(f"{where}: subprocess without a fixed argument list, or with shell=")
            if isinstance(f, ast.Attribute) and f.attr == "import_module" and node.args and rel not in IMPORT_MODULE_OK:
                arg = node.args[0]  # only modules of this package, named by the package itself
                ok = isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], (ast.Constant, ast.FormattedValue))
                first = arg.values[0] if ok else None
                if not (isinstance(first, ast.Constant) and str(first.value).startswith("dsl.")) and not (
                    isinstance(first, ast.FormattedValue) and isinstance(first.value, ast.Name)
                    and first.value.id == "__name__"
                ):
                    problems.append(f"{where}: import_module of a computed name")
        if isinstance(node, ast.keyword) and node.arg == "Loader" and not _safe_loader(node.value, assigned):
            problems.append(f"{where}: a YAML loader other than SafeLoader")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            for bad in ("marshal", "shelve", "dill"):
                if bad in names:
                    problems.append(f"{where}: imports {bad}")
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b).endswith("Unpickler") for b in node.bases):
            # a restricted unpickler must decide which globals exist (an allow-list in find_class)
            if not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in node.body):
                problems.append(f"{where}: an Unpickler subclass without find_class")
    return problems


def _safe_loader(value: ast.expr, assigned: dict[str, list[ast.expr]]) -> bool:
    """``yaml.SafeLoader``, ``yaml.CSafeLoader`` or a name only ever bound to those."""
    if isinstance(value, ast.Name) and value.id in assigned:
        return all(_safe_loader(v, {}) for v in assigned[value.id])
    text = ast.unparse(value)
    names = {n.attr for n in ast.walk(value) if isinstance(n, ast.Attribute)} | {
        n.value for n in ast.walk(value) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    return bool(names) and names <= {"SafeLoader", "CSafeLoader"} and "Unsafe" not in text


def test_no_eval_exec_or_unsafe_loading_in_the_package():
    files = _python_files()
    assert len(files) > 30
    problems = [p for f in files for p in _call_problems(f)]
    assert not problems, "\n".join(problems)


def test_the_scanner_catches_what_it_must(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, yaml, torch, marshal\n"
        "eval(text)\nexec(code)\n__import__(name)\npickle.loads(b)\nyaml.load(t, Loader=yaml.Loader)\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\nimportlib.import_module(name)\n"
        "subprocess.run(cmd, shell=True)\nyaml.safe_load(t)\nyaml.load(t, Loader=getattr(yaml, 'CSafeLoader'))\n"
        "class U(pickle.Unpickler):\n    pass\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = _call_problems(bad)
    finally:
        ROOT = saved
    assert len(problems) == 13, problems


def test_yaml_tags_never_construct_objects(tmp_path: Path):
    marker = tmp_path / "PWNED"
    text = (
        f"params:\n  a: !!python/object/apply:os.system [\"touch {marker}\"]\n"
        f"  b: !!python/object/new:os.system [\"touch {marker}\"]\n"
        "model: {name: M, inputs: {x: {shape: [B]}}, outputs: {x: {}}}\n"
    )
    with pytest.raises(SpecError) as info:
        dsl.loads(text, "yaml")
    assert [d.code for d in info.value.diagnostics] == ["E0701", "E0701"]
    assert not marker.exists()


def test_alias_bomb_is_refused_at_once():
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")  # 9**10 nodes in all
    text = "params:\n" + "\n".join("  " + line for line in lines) + "\nmodel: {name: M}\n"
    with pytest.raises(SpecError) as info:
        dsl.loads(text, "yaml")
    (d,) = info.value.diagnostics
    assert d.code == "E0801" and "100000 nodes" in d.message
    assert d.span.line == 7  # a5: the first anchor that alone expands past the limit
    with pytest.raises(SpecError) as info:
        dsl.loads("params:\n  a: &a [1, *a]\n", "yaml")
    assert info.value.diagnostics[0].code == "E0801"


@pytest.mark.parametrize("name", ["__import__('os')", "os.system", "a;b", "a b", "x\n", "1x", "é", "a-b", ""])
def test_injected_names_are_rejected_everywhere(name: str):
    text = f"model M {{\n    input x: [B]\n    {name} = relu(x)\n    output x\n}}\n"
    with pytest.raises(SpecError):
        dsl.loads(text)
    yaml_text = "model:\n  name: M\n  inputs: {x: {shape: [B]}}\n  nodes:\n    - {id: " + json.dumps(name) + \
        ", op: relu, in: [x]}\n  outputs: {x: {}}\n"
    with pytest.raises(SpecError) as info:
        dsl.loads(yaml_text, "yaml")
    assert info.value.diagnostics[0].code == "E0213"
    g = dsl.Graph("M")
    with pytest.raises(SpecError) as info:
        g.input(name, ["B"])
    assert info.value.diagnostics[0].code == "E0213"


def test_python_words_as_names_stay_inert():
    """Keywords, builtins and module names are fine for tensors, blocks and models
    (generated code renames them); as inputs, which become forward() parameters,
    keywords, `self` and `torch` are refused."""
    text = """\
block class(k: int = 2) {
    input x: [N, 4]
    return = relu(x)
    output return
}
model lambda {
    input forward: [N, 4]
    torch = Linear(forward, out=4)
    __class__ = torch + forward
    self = class(__class__)
    getattr = gelu(self)
    output getattr
}
"""
    model = dsl.compile(dsl.loads(text))
    x = torch.randn(3, 4)
    lin = model.get_submodule("v_torch")
    expected = torch.nn.functional.gelu(torch.relu(lin(x) + x))
    assert torch.allclose(model(forward=x), expected)
    for bad in ("self", "torch", "lambda", "None", "def"):
        (d,) = dsl.check(dsl.loads(f"model M {{\n    input {bad}: [N]\n    output {bad}\n}}\n"))
        assert (d.code, d.span.line, d.span.col) == ("E0213", 2, 5)


HOSTILE_STRINGS = ['a"b', "a'b", "line\nbreak", 'tri"""ple', "back\\slash", "}\nmodel Evil {", "${x}", "\t\x00"]


@pytest.mark.parametrize("value", HOSTILE_STRINGS)
def test_strings_round_trip_without_escaping_their_quotes(value: str):
    spec = dsl.Graph("M", args={"tag": value})
    x = spec.input("x", ["B"])
    spec.output("y", spec.relu(x))
    built = spec.build()
    for text, kind in ((built.to_text(), "dsl"), (built.to_yaml(), "yaml")):
        again = dsl.loads(text, kind)
        assert again.model is not None and len(again.model.params) == 1
        assert again.model.params[0].default.value == value, text
        assert again.model.body == dsl.loads(built.to_text()).model.body or kind == "yaml"


def test_injection_through_params_is_inert(tmp_path: Path):
    marker = tmp_path / "PWNED"
    payload = f"__import__('os').system('touch {marker}')"
    path = tmp_path / "m.dsl"
    path.write_text('model M(n: int = 4, tag: str = "x") {\n    input x: [B, 8]\n    y = Linear(x, out=n)\n'
                    "    output y\n}\n")
    code, _, err = run_cli("check", str(path), "--set", f"n={payload}")
    assert code == 1 and "error[E0404]" in err
    code, _, err = run_cli("check", str(path), "--set", f"tag={payload}")
    assert code == 0, err  # a string param may hold any text: it is data, never run
    assert dsl.check(path, tag=payload) == []
    with pytest.raises(SpecError):
        dsl.compile(path, n=payload)
    assert not marker.exists()


def test_use_is_relative_to_the_importing_file_and_refuses_urls(tmp_path: Path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "blocks.dsl").write_text("param width = 3\nblock Head() {\n    input x: [B, F]\n    y = Linear(x, out=width)\n"
                                    "    output y\n}\n")
    (lib / "model.dsl").write_text('use "blocks.dsl"\nmodel M {\n    input x: [B, 8]\n    y = Head(x)\n'
                                   "    output y: [B, width]\n}\n")
    code, _, err = run_cli("check", "lib/model.dsl", cwd=str(tmp_path))
    assert code == 0, err
    code, _, err = run_cli("check", str(lib / "model.dsl"), cwd="/")
    assert code == 0, err
    for url in ("http://example.com/a.dsl", "https://example.com/a.dsl", "file:///etc/passwd", "ftp://h/a.dsl",
                "\\\\server\\share\\a.dsl"):
        diags = dsl.check(dsl.loads(f"use {json.dumps(url)}\n" + BIG))
        assert diags[0].code == "E0204" and (diags[0].span.line, diags[0].span.col) == (1, 1), url


def test_lark_cache_folder_must_be_private(tmp_path: Path, monkeypatch):
    from dsl.language.text import _cache_path

    shared = tmp_path / "shared"
    (shared / "dsl").mkdir(parents=True)
    os.chmod(shared / "dsl", 0o777)  # anyone could plant a pickle there
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared))
    assert _cache_path() is None
    private = tmp_path / "private"
    monkeypatch.setenv("XDG_CACHE_HOME", str(private))
    path = _cache_path()
    assert path is not None and path.startswith(str(private))


# --------------------------------------------------------------------------- checkpoints

TRAIN = """\
model M {
    input x: [B, 4]
    logits = Linear(x, out=3)
    output logits
}
train {
    data = iris(batch=32)
    loss = cross_entropy(logits, y)
    epochs = 1
    seed = 0
}
"""


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("ckpt")
    spec = tmp / "m.dsl"
    spec.write_text(TRAIN)
    code, _, err = run_cli("train", str(spec), "--out", str(tmp / "run"), "--quiet")
    assert code == 0, err
    return spec, tmp / "run"


def _poison(path: Path, marker: Path) -> None:
    _Evil.marker = str(marker)
    with open(path, "wb") as fh:
        pickle.dump({"epoch": _Evil()}, fh)


def test_malicious_optimizer_state_is_refused(run_dir, tmp_path: Path):
    spec, run = run_dir
    work = tmp_path / "run"
    import shutil

    shutil.copytree(run, work)
    marker = tmp_path / "PWNED"
    _poison(work / "state.pt", marker)
    from dsl.training.rundir import RunDir

    with pytest.raises(RunError, match="holds Python objects") as caught:
        RunDir(str(work)).load_state()
    assert caught.value.code == "E0704" and "weights_only" not in str(caught.value)  # torch's advice is not passed on
    code, out, err = run_cli("train", str(spec), "--out", str(work), "--resume", "--quiet")
    assert code == 1 and "Traceback" not in err and "error[E0704]" in err and "weights_only" not in err
    assert not marker.exists()


def test_malicious_weights_are_refused(run_dir, tmp_path: Path):
    spec, run = run_dir
    import shutil

    work = tmp_path / "run"
    shutil.copytree(run, work)
    marker = tmp_path / "PWNED"
    _poison(work / "model.safetensors", marker)
    code, out, err = run_cli("eval", str(spec), "--ckpt", str(work))
    assert code == 1 and "Traceback" not in err
    assert not marker.exists()


def test_malicious_data_file_for_predict_is_refused(run_dir, tmp_path: Path):
    spec, run = run_dir
    marker = tmp_path / "PWNED"
    evil = tmp_path / "inputs.pt"
    _Evil.marker = str(marker)
    with open(evil, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    code, out, err = run_cli("predict", str(spec), "--ckpt", str(run), "--data", str(evil),
                             "--out", str(tmp_path / "p.npz"))
    assert code == 1 and "error[E0703]" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "p.npz").exists()


def test_use_chain_is_bounded(tmp_path: Path):
    for i in range(40):
        (tmp_path / f"f{i}.dsl").write_text(f'use "f{i + 1}.dsl"\nparam p{i} = {i}\n')
    (tmp_path / "f40.dsl").write_text("param last = 1\n")
    (tmp_path / "main.dsl").write_text('use "f0.dsl"\n' + BIG.replace("100000", "10"))
    diags = dsl.check(tmp_path / "main.dsl")
    assert [d.code for d in diags] == ["E0801"]
    assert "deeper than 32 files" in diags[0].message and diags[0].span.line == 1
