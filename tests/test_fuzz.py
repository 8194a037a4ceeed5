"""Property-based and mutation fuzzing of the text and YAML front ends.

Every input, however mangled, must end in a parsed spec or a
:class:`dsl.SpecError`: any other exception (RecursionError, KeyError,
AttributeError, a pydantic ValidationError ...) fails the test. Specs that
parse are also checked (``dsl.api.analyse``), which must return diagnostics
rather than raise. Hypothesis's ``deadline`` bounds the time of each example
(parse and check), a generous per-example limit for a loaded CI machine, not a
benchmark: the product promise is well under a second per input.

Seeds are the example specs in ``specs/`` (and the YAML form of each ``.dsl``);
mutations delete, insert and duplicate characters and tokens, splice in
random unicode, hostile tokens (huge numbers, quotes, newlines, brackets) and
deep nesting. The Python builder gets arbitrary names, shapes and
hyperparameter values. Runs are derandomised so CI is reproducible; set
``DSL_FUZZ_EXAMPLES`` to run more (random) examples locally, and
``DSL_FUZZ_DEADLINE_MS=1000`` to hold every example to the one-second promise.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsl
from dsl.api import analyse
from dsl.language.errors import SpecError

SPECS = Path(__file__).resolve().parent.parent / "specs"
EXAMPLES = int(os.environ.get("DSL_FUZZ_EXAMPLES", "60"))
DEADLINE_MS = int(os.environ.get("DSL_FUZZ_DEADLINE_MS", "2000"))  # per example; generous for loaded CI

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(milliseconds=DEADLINE_MS),
    derandomize="DSL_FUZZ_EXAMPLES" not in os.environ,  # CI reproducible; local long runs random
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _seeds() -> dict[str, list[str]]:
    dsl_texts = [p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*.dsl"))]
    yaml_texts = [p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*.yaml"))]
    for text in dsl_texts:
        try:
            yaml_texts.append(dsl.loads(text, "dsl").to_yaml())
        except SpecError:  # a seed that uses another file
            continue
    return {"dsl": dsl_texts, "yaml": yaml_texts}


SEEDS = _seeds()

# Tokens a mutation may splice in: the language's own, and hostile ones.
TOKENS = [
    "model", "block", "param", "use", "repeat", "as", "input", "output", "train", "true", "false", "null",
    "(", ")", "[", "]", "{", "}", ",", "=", ":", ";", "\n", "...", "_", "+", "-", "*", "/", "//", "%", "**", "@",
    "0", "-1", "2.5e300", "1e-999", "9" * 400, "2**62", "10**10", "'", '"', '"\\', "\\n", "#", "${", "}$",
    "&a", "*a", "!!python/object/apply:os.system", "<<:", "- ", "  ", "\t", "\r", "\x00", "\ufeff", "\u202e",
    "x", "N", "Linear", "MoE", "relu", "__import__('os')", "é", "ℕ", "😀", "\U0010ffff",
    # DESIGN §9/§10 constructs, fuzzed as they land: slices, masks, learned tensors, new sources
    "[:", "::", "[..., :k]", "[:, 0]", "[-1]", "Parameter([], init=\"zeros\")", "causal_mask(T)", "where(",
    "key_padding_mask=", "table(", "chars(", "images(", "compile", "load_state_dict", "dsl_outputs", "self",
    "__class__", "1e20", "-100",
]
TOKEN_RE = re.compile(r"\w+|\s+|.", re.S)


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> str:
    """A seed spec with up to 6 random edits."""
    text = draw(st.sampled_from(SEEDS[kind]))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "token", "swap", "unicode"]))
        n = len(text)
        i = draw(st.integers(0, n))
        j = min(n, i + draw(st.integers(0, 40)))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] * draw(st.integers(1, 4)) + text[j:]
        elif op == "unicode":
            text = text[:i] + draw(st.text(max_size=8)) + text[i:]
        else:
            tokens = TOKEN_RE.findall(text)
            if len(tokens) < 2:
                continue
            a = draw(st.integers(0, len(tokens) - 1))
            if op == "token":
                tokens[a] = draw(st.sampled_from(TOKENS))
            else:
                b = draw(st.integers(0, len(tokens) - 1))
                tokens[a], tokens[b] = tokens[b], tokens[a]
            text = "".join(tokens)
    return text


def _nested(kind: str, depth: int, style: str) -> str:
    """Deeply nested input of one style (the limits are 64 levels)."""
    if kind == "dsl":
        inner = {
            "paren": "(" * depth + "1" + ")" * depth,
            "list": "[" * depth + "1" + "]" * depth,
            "unary": "-" * depth + "1",
            "binop": "+".join(["1"] * depth),
            "call": "f(" * depth + "x" + ")" * depth,
        }[style]
        return f"param p = {inner}\nmodel M {{\n    input x: [B, 4]\n    output x\n}}\n"
    body = {
        "paren": "[" * depth + "1" + "]" * depth,
        "list": "\n" + "".join("  " * (i + 1) + "-\n" for i in range(depth)) + "  " * (depth + 1) + "- 1",
        "unary": "{a: " * depth + "1" + "}" * depth,
        "binop": "${" + "+".join(["1"] * depth) + "}",
        "call": "\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth)) + "  " * (depth + 1) + "v",
    }[style]
    return f"params:\n  p: {body}\nmodel:\n  name: M\n  inputs: {{x: {{shape: [B, 4]}}}}\n  outputs: {{x: {{}}}}\n"


def _front_end_survives(text: str, kind: str) -> None:
    """The property: parse, then check what parses; only SpecError may escape."""
    try:
        spec = dsl.loads(text, kind)
    except SpecError as err:
        assert err.diagnostics, "a SpecError must carry diagnostics"
        for d in err.diagnostics:
            assert d.code and d.message
        str(err)  # rendering never fails either
        return
    analysis = analyse(spec)
    diags = analysis.diagnostics
    for d in diags:
        assert d.code and d.message


@pytest.mark.parametrize("kind", ["dsl", "yaml"])
def test_seeds_are_valid(kind: str):
    assert SEEDS[kind]
    for text in SEEDS[kind]:
        dsl.loads(text, kind)


@FUZZ
@given(data=st.data())
def test_mutated_dsl(data: st.DataObject):
    _front_end_survives(data.draw(mutated("dsl")), "dsl")


@FUZZ
@given(data=st.data())
def test_mutated_yaml(data: st.DataObject):
    _front_end_survives(data.draw(mutated("yaml")), "yaml")


@FUZZ
@given(text=st.text(max_size=300), kind=st.sampled_from(["dsl", "yaml"]))
def test_random_text(text: str, kind: str):
    _front_end_survives(text, kind)


@FUZZ
@given(
    kind=st.sampled_from(["dsl", "yaml"]),
    depth=st.integers(1, 600),
    style=st.sampled_from(["paren", "list", "unary", "binop", "call"]),
)
def test_deep_nesting(kind: str, depth: int, style: str):
    _front_end_survives(_nested(kind, depth, style), kind)


@pytest.mark.parametrize("kind", ["dsl", "yaml"])
@pytest.mark.parametrize("style", ["paren", "list", "unary", "binop", "call"])
def test_deep_nesting_names_the_limit(kind: str, style: str):
    """Far past the limit: a clean E0102 that says which limit, never a RecursionError."""
    with pytest.raises(SpecError) as info:
        # 1500 levels on one line (under the line limit); YAML block nesting is 500
        # levels, already past the recursion limit of PyYAML's composer.
        block_yaml = kind == "yaml" and style in ("list", "call")
        dsl.loads(_nested(kind, 500 if block_yaml else 1500, style), kind)
    d = info.value.diagnostics[0]
    assert d.code == "E0102", d
    assert re.search(r"more than (64|200) levels", d.message), d.message
    assert d.span.line >= 1 and d.span.col >= 1


@pytest.mark.parametrize("kind", ["dsl", "yaml"])
def test_long_line_and_long_file_name_the_limit(kind: str):
    from dsl.language.text import MAX_CHARS, MAX_LINE

    prefix = "# " if kind == "dsl" else "# "
    with pytest.raises(SpecError) as info:
        dsl.loads(prefix + "x" * (MAX_LINE + 5) + "\n", kind)
    d = info.value.diagnostics[0]
    assert (d.code, d.span.line, d.span.col) == ("E0102", 1, MAX_LINE + 1)
    assert f"the limit is {MAX_LINE:,}" in d.message
    with pytest.raises(SpecError) as info:
        dsl.loads(("#" + " " * 98 + "\n") * (MAX_CHARS // 100 + 1), kind)
    d = info.value.diagnostics[0]
    assert d.code == "E0102" and f"the limit is {MAX_CHARS:,}" in d.message


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=5,
)
DIMS = st.lists(st.one_of(st.integers(-5, 2**70), st.text(max_size=6), st.none(), st.floats(), st.just(...)),
                max_size=4)
CALLEES = ["Linear", "MLP", "MoE", "Gate", "GAT", "Hopfield", "HopfieldLayer", "PrototypeHead", "Embedding",
           "relu", "cat", "softmax", "reshape", "NoSuchBlock"]
KEYS = ["out", "hidden", "experts", "k", "heads", "dim", "num", "classes", "patterns", "p", "shape", "dim0"]


@FUZZ
@given(name=st.text(max_size=8), shape=DIMS, callee=st.sampled_from(CALLEES),
       kwargs=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3))
def test_builder_random_values(name: str, shape: list, callee: str, kwargs: dict):
    """The Python builder with arbitrary names, shapes and hyperparameter values:
    a spec or a SpecError at the user's call, never another exception."""
    try:
        g = dsl.Graph("M")
        x = g.input(name, shape)
        g.output("y", g.call(callee, x, **kwargs))
        spec = g.build()
    except SpecError as err:
        assert all(d.span.file == __file__ for d in err.diagnostics if d.span.known)
        return
    analysis = analyse(spec)
    diags = analysis.diagnostics
    for d in diags:
        assert d.code and d.message
    spec.to_text()
    spec.to_yaml()


# --------------------------------------------------------------------------- no internal error (issue 27)
#
# The command line turns any exception it does not expect into "internal error" (exit 3): that
# is reserved for bugs, so no input, however hostile, may produce it.


def _cli_survives(*args: str) -> tuple[int, str, str]:
    code, out, err = run_cli(*args)
    assert "internal error" not in err and "Traceback" not in err and "--debug" not in err, err[-2000:]
    assert code in (0, 1), (code, err[-2000:])
    return code, out, err


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["dsl", "yaml"]))
def test_check_never_reports_an_internal_error(data: st.DataObject, kind: str, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / f"spec.{kind}"
    path.write_text(data.draw(mutated(kind)), encoding="utf-8", errors="surrogatepass")
    _cli_survives("check", str(path))


RUN_META = {"model": "M", "spec_file": "/nowhere/m.dsl", "spec_hash": "ab" * 32, "data": "iris()", "seed": 0,
            "overrides": {}, "epochs": 3, "epoch": 2, "best": {"metric": "loss", "value": 0.5, "epoch": 2,
                                                                "split": "val"}, "stopped_early": False}
RUN_RECORD = {"epoch": 2, "lr": 0.01, "train": {"loss": 0.4}, "val": {"loss": 0.5},
              "experts": {"moe": {"kind": "MoE", "experts": 2, "k": 1, "load": [0.5, 0.5], "importance": [0.5, 0.5],
                                  "entropy": 0.6, "entropy_max": 0.69, "unused": 0.0, "tokens": 10}},
              "pruning": {"layers": {"l": 0.5}, "sparsity": 0.5, "weights": 10, "nonzero": 5}}


def _mutate_json(value, draw, depth: int = 0):
    """``value`` with some entries replaced by arbitrary JSON."""
    if isinstance(value, dict):
        return {k: (draw(VALUES) if draw(st.integers(0, 5)) == 0 else _mutate_json(v, draw, depth + 1))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_mutate_json(v, draw, depth + 1) for v in value]
    return draw(VALUES) if draw(st.integers(0, 3)) == 0 else value


@FUZZ
@given(data=st.data())
def test_inspect_of_a_tampered_run_never_reports_an_internal_error(data: st.DataObject, tmp_path_factory):
    import json

    run = tmp_path_factory.mktemp("run")
    meta = _mutate_json(RUN_META, data.draw)
    (run / "meta.json").write_text(json.dumps(meta))
    records = [_mutate_json({**RUN_RECORD, "epoch": e}, data.draw) for e in (1, 2)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    _cli_survives("inspect", str(run))
    _cli_survives("inspect", str(run), "--json")


CSV_SPEC = """model M {
    input x: [B, 2]
    logits = Linear(x, out=2)
    output logits
}
train {
    data = file("d.csv", batch=4)
    loss = cross_entropy(logits, y)
    epochs = 1
}
"""
CSV_SEED = "a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n0.5,1e3,0\n-1,2,1\n"
CSV_TOKENS = [",", "\n", "\r", "\r\n", '"', '""', "1e20", "-100", "7", "nan", "inf", "-0", "1.5", "", " ", "\x00",
              "\ufeff", "é", "9" * 40, "a", "y", ",,,"]


@settings(FUZZ, deadline=None)  # the first example imports torch and scikit-learn
@given(edits=st.lists(st.tuples(st.integers(0, 60), st.sampled_from(CSV_TOKENS), st.booleans()), max_size=5))
def test_a_mangled_csv_is_a_diagnostic_or_data(edits, tmp_path_factory):
    from dsl.training.labels import check_labels
    from dsl.training.session import load_data, prepare

    folder = tmp_path_factory.mktemp("csv")
    text = CSV_SEED
    for at, token, replace in edits:
        at = min(at, len(text))
        text = text[:at] + token + text[at + (1 if replace else 0):]
    (folder / "d.csv").write_text(text, encoding="utf-8")
    (folder / "spec.dsl").write_text(CSV_SPEC)
    code, _, _ = _cli_survives("check", str(folder / "spec.dsl"))
    if code:
        return
    try:
        p = prepare(str(folder / "spec.dsl"))
        check_labels(p.analysis, load_data(p.cfg))
    except SpecError as err:
        assert all(d.code == "E0703" for d in err.diagnostics), err
