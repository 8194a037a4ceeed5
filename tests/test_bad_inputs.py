"""The bad-input corpus: every hostile or mistaken input ends in a diagnostic
with a stable code at an exact line and column, and the CLI exits 1 (2 for
usage errors) without a traceback.

* ``tests/bad_inputs/*.dsl`` and ``*.yaml``: each file starts with
  ``# expect: CODE line:col`` lines (the convention of ``specs/broken``);
* ``tests/bad_inputs/builder_cases.py``: ``dsl.Graph`` misuse, each case
  preceded by its ``# expect:`` line (positions are the user's call);
* the tables below: command-line arguments and data files (.csv, .npz, .pt).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_cli

import dsl
from dsl.language.diagnostics import CODES
from dsl.language.errors import SpecError

HERE = Path(__file__).parent / "bad_inputs"
SPEC_FILES = sorted(p for p in HERE.glob("*") if p.suffix in (".dsl", ".yaml"))
EXPECT = re.compile(r"# expect: (E\d{4}) (\d+):(\d+)")


def _expected(text: str) -> list[tuple[str, int, int]]:
    return [(m[0], int(m[1]), int(m[2])) for m in EXPECT.findall(text)]


def _got(diags) -> list[tuple[str, int, int]]:
    return [(d.code, d.span.line, d.span.col) for d in diags if d.severity == "error"]


def test_corpus_is_large_and_uses_known_codes():
    builder = _builder_cases()
    total = len(SPEC_FILES) + len(builder) + len(CLI_CASES) + len(USAGE_CASES) + len(DATA_CASES)
    assert total >= 60, total
    for path in SPEC_FILES:
        for code, _, _ in _expected(path.read_text(encoding="utf-8")):
            assert code in CODES, (path.name, code)


# --------------------------------------------------------------------------- spec files


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_spec_file_gives_expected_diagnostics(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# expect: "), f"{path.name} must start with its `# expect:` line"
    expected = _expected(text)
    assert _got(dsl.check(path)) == expected
    code, out, err = run_cli("check", str(path))
    assert code == 1
    assert "Traceback" not in err and "internal error" not in err
    for c, line, col in expected:
        assert f"error[{c}]" in err and f":{line}:{col}" in err


# --------------------------------------------------------------------------- builder


def _builder_cases() -> list[tuple[str, tuple[str, int, int], Callable]]:
    path = HERE / "builder_cases.py"
    spec = importlib.util.spec_from_file_location("bad_inputs_builder_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = path.read_text(encoding="utf-8").splitlines()
    cases = []
    for i, line in enumerate(lines):
        m = EXPECT.match(line)
        if m:
            name = re.match(r"def (case_\w+)", lines[i + 1])
            assert name, f"line {i + 2} of builder_cases.py must define the case its `# expect:` names"
            cases.append((name[1], (m[1], int(m[2]), int(m[3])), getattr(module, name[1])))
    return cases


BUILDER = _builder_cases()


@pytest.mark.parametrize("case", BUILDER, ids=[c[0] for c in BUILDER])
def test_builder_case(case):
    _, expected, fn = case
    try:
        spec = fn()
    except SpecError as err:
        diags = err.diagnostics
    else:
        assert spec is not None, "the case neither raised nor returned a spec"
        diags = dsl.check(spec)
    got = _got(diags)
    assert got and got[0] == expected, got
    assert all(d.span.file.endswith("builder_cases.py") for d in diags if d.span.known)


# --------------------------------------------------------------------------- command line

SPEC = """\
model M(n: int = 4) {
    input x: [B, 8]
    y = Linear(x, out=n)
    output y
}
"""
TRAIN_SPEC = """\
model M {
    input x: [B, 4]
    logits = Linear(x, out=3)
    output logits
}
train {
    data = iris()
    loss = cross_entropy(logits, y)
    epochs = 1
}
"""


def _files(tmp: Path) -> dict[str, str]:
    """The files the CLI cases name, made fresh in a temporary folder."""
    (tmp / "spec.dsl").write_text(SPEC)
    (tmp / "train.dsl").write_text(TRAIN_SPEC)
    (tmp / "binary.dsl").write_bytes(b'param a = 1\nparam b = "\xff\xfe"\n')
    (tmp / "huge.dsl").write_text(("#" + " " * 98 + "\n") * 50_001)  # 5,000,100 bytes: over the limit
    return {k: str(tmp / f) for k, f in {"spec": "spec.dsl", "train": "train.dsl", "binary": "binary.dsl",
                                         "huge": "huge.dsl", "dir": "."}.items()}


# (name, arguments with {placeholders}, expected first error (code, line, col))
CLI_CASES: list[tuple[str, list[str], tuple[str, int, int]]] = [
    ("missing_file", ["check", "{tmp}/nope.dsl"], ("E0702", 0, 0)),
    ("directory", ["check", "{dir}"], ("E0702", 0, 0)),
    ("not_utf8", ["check", "{binary}"], ("E0702", 2, 12)),
    ("file_too_big", ["check", "{huge}"], ("E0801", 0, 0)),
    ("set_unknown_param", ["check", "{spec}", "--set", "nosuch=1"], ("E0404", 0, 0)),
    ("set_wrong_type", ["check", "{spec}", "--set", "n=abc"], ("E0404", 1, 9)),
    ("set_negative_size", ["check", "{spec}", "--set", "n=-4"], ("E0401", 3, 23)),
    ("set_code_injection", ["check", "{spec}", "--set", "n=__import__('os').system('true')"], ("E0404", 1, 9)),
    ("dim_too_large", ["check", "{spec}", "--dim", "B=3000000000"], ("E0801", 2, 5)),
    ("max_params_check", ["check", "{spec}", "--max-params", "10"], ("E0802", 3, 9)),
    ("max_params_compile", ["compile", "{spec}", "--max-params", "10"], ("E0802", 3, 9)),
    ("max_params_train", ["train", "{train}", "--max-params", "10", "--out", "{tmp}/run"], ("E0802", 3, 14)),
    ("set_on_train", ["train", "{train}", "--set", "lrate=1", "--out", "{tmp}/run"], ("E0404", 0, 0)),
]

# (name, arguments): argparse-level or CLI usage errors, exit 2
USAGE_CASES: list[tuple[str, list[str]]] = [
    ("set_not_assignment", ["check", "{spec}", "--set", "n"]),
    ("set_bad_name", ["check", "{spec}", "--set", "1x=3"]),
    ("dim_not_int", ["check", "{spec}", "--dim", "B=abc"]),
    ("dim_negative", ["check", "{spec}", "--dim", "B=-1"]),
    ("max_params_zero", ["check", "{spec}", "--max-params", "0"]),
    ("max_params_word", ["check", "{spec}", "--max-params", "lots"]),
    ("compile_two_files", ["compile", "{spec}", "{spec}"]),
    ("unknown_command", ["frobnicate", "{spec}"]),
    ("check_no_file", ["check"]),
    ("epochs_not_int", ["train", "{train}", "--epochs", "many"]),
    ("unknown_option", ["check", "{spec}", "--no-such-option"]),
]


def _fill(args: list[str], files: dict[str, str], tmp: Path) -> list[str]:
    return [a.format(tmp=tmp, **files) for a in args]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_case(case, tmp_path: Path):
    _, args, expected = case
    argv = _fill(args, _files(tmp_path), tmp_path)
    code, out, err = run_cli(*argv[:1], "--json", *argv[1:]) if argv[0] == "check" else run_cli(*argv, "--json")
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    rows = json.loads(out)
    first = next(r for r in rows if r["severity"] == "error")
    assert (first["code"], first["line"], first["col"]) == expected, rows
    code, _, err = run_cli(*argv)  # the same as text: a rendered diagnostic
    assert code == 1 and f"error[{expected[0]}]" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before a run directory was made


@pytest.mark.parametrize("case", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_cli_usage_error(case, tmp_path: Path):
    _, args = case
    code, out, err = run_cli(*_fill(args, _files(tmp_path), tmp_path))
    assert code == 2, (out, err)
    assert "Traceback" not in err and "error" in err


def test_eval_without_checkpoint_is_a_message(tmp_path: Path):
    files = _files(tmp_path)
    code, out, err = run_cli("eval", files["train"], "--ckpt", str(tmp_path / "none"))
    assert code == 1 and "Traceback" not in err and "model.safetensors" in err


# --------------------------------------------------------------------------- data files

DATA_SPEC = """\
model M {
    input x: [B, 2]
    logits = Linear(x, out=2)
    output logits
}
train {
    data = file("{name}"{extra})
    loss = cross_entropy(logits, y)
    epochs = 1
}
"""


def _npz(**arrays):
    def make(path: Path) -> None:
        import numpy as np

        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})

    return make


def _npz_good(**changes):
    import numpy as np

    x = np.ones((6, 2), np.float32)
    y = np.array([0, 1, 0, 1, 0, 1])
    fields = {"x": x, "y": y}
    for k, v in changes.items():
        fields[k] = v(fields) if callable(v) else v
    return _npz(**fields)


def _objects(n: int):
    import numpy as np

    return np.array([{}] * n, dtype=object)


def _with_nan(fields):
    x = fields["x"].copy()
    x[3, 1] = float("nan")
    return x


def _text(content: str | bytes):
    def make(path: Path) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return make


def _torch_save(obj_fn):
    def make(path: Path) -> None:
        import torch

        torch.save(obj_fn(), path)

    return make


class _Evil:
    """Unpickling this would run a shell command (it must be refused)."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pickle(path: Path) -> None:
    import pickle

    _Evil.marker = str(path.parent / "PWNED")
    with open(path, "wb") as fh:
        pickle.dump({"x": _Evil(), "y": [0, 1]}, fh)


def _npy_header(header: bytes):
    """An .npz whose one member has this .npy header (and 64 bytes of data)."""
    def make(path: Path) -> None:
        import struct
        import zipfile

        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("x.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 64)

    return make


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link_to_dev_zero(path: Path) -> None:
    os.symlink("/dev/zero", path)


def _rows_csv(*rows: str) -> Callable:
    return _text("a,b,y\n" + "".join(r + "\n" for r in rows))


GOOD_ROWS = ("1,2,0", "3,4,1", "5,6,0", "7,8,1", "9,1,0", "2,3,1")


def _tensors(**changes):
    def make():
        import torch

        fields = {"x": torch.ones(6, 2), "y": torch.tensor([0, 1, 0, 1, 0, 1])}
        fields.update({k: v() for k, v in changes.items()})
        return fields

    return make


def _arrays(n: int = 6, rows: int | None = None):
    import torch

    return {"x": torch.ones(n, 2), "y": torch.zeros(rows if rows is not None else n, dtype=torch.long)}


# (name, file name, maker, extra file() args, command, expected (code, file, line, col))
# `file` is "spec" when the diagnostic points at `data = ...` in the spec (line 7, column 12).
AT_DATA = ("spec", 7, 12)
DATA_CASES: list[tuple[str, str, Callable, str, str, tuple[str, str, int, int]]] = [
    ("csv_short_row", "d.csv", _text("a,b,y\n1,2,0\n3,4\n"), "", "check", ("E0703", "d.csv", 3, 4)),
    ("csv_long_row", "d.csv", _text("a,b,y\n1,2,0\n3,4,1,9\n"), "", "check", ("E0703", "d.csv", 3, 7)),
    ("csv_not_a_number", "d.csv", _text("a,b,y\n1,2,0\n3,four,1\n"), "", "check", ("E0703", "d.csv", 3, 3)),
    ("csv_nan", "d.csv", _text("a,b,y\n1,nan,0\n"), "", "check", ("E0703", "d.csv", 2, 3)),
    ("csv_infinity", "d.csv", _text("a,b,y\n1,2,0\n1,2,0\n-inf,2,1\n"), "", "check", ("E0703", "d.csv", 4, 1)),
    ("csv_empty_field", "d.csv", _text("a,b,y\n1,,0\n"), "", "check", ("E0703", "d.csv", 2, 3)),
    ("csv_fractional_label", "d.csv", _text("a,b,y\n1,2,0.5\n"), "", "check", ("E0703", "d.csv", 2, 5)),
    ("csv_missing_label", "d.csv", _text("a,b,z\n1,2,0\n"), "", "check", ("E0703", "d.csv", 1, 1)),
    ("csv_duplicate_column", "d.csv", _text("a,a,y\n1,2,0\n"), "", "check", ("E0703", "d.csv", 1, 3)),
    ("csv_empty", "d.csv", _text(""), "", "check", ("E0703", "d.csv", 1, 1)),
    ("csv_not_utf8", "d.csv", _text(b"a,b,y\n1,2,0\n1,\xff,0\n"), "", "check", ("E0703", "d.csv", 3, 3)),
    ("csv_ragged_train", "d.csv", _text("a,b,y\n1,2,0\n3,4\n"), "", "train", ("E0703", "d.csv", 3, 4)),
    ("npz_text_dtype", "d.npz", _npz_good(x=[["a", "b"]] * 6), "", "check", ("E0703", *AT_DATA)),
    ("npz_object_dtype", "d.npz", _npz_good(x=lambda f: _objects(6)), "", "check", ("E0703", *AT_DATA)),
    ("npz_ragged", "d.npz", _npz_good(y=[0, 1, 0]), "", "check", ("E0703", *AT_DATA)),
    ("npz_scalar_field", "d.npz", _npz_good(k=3), "", "check", ("E0703", *AT_DATA)),
    ("npz_not_a_zip", "d.npz", _text("this is not a zip archive"), "", "check", ("E0703", *AT_DATA)),
    ("npz_missing_field", "d.npz", _npz_good(), ', fields=["x", "w"]', "check", ("E0703", *AT_DATA)),
    ("npz_no_model_input", "d.npz", _npz(features=[[1.0, 2.0]] * 6, y=[0] * 6), "", "check", ("E0503", *AT_DATA)),
    ("npz_wrong_dtype", "d.npz", _npz_good(x=[[1, 2]] * 6), "", "check", ("E0302", *AT_DATA)),
    ("npz_wrong_width", "d.npz", _npz_good(x=[[1.0, 2.0, 3.0]] * 6), "", "check", ("E0301", *AT_DATA)),
    ("npz_nan", "d.npz", _npz_good(x=_with_nan), "", "train", ("E0703", *AT_DATA)),
    ("pt_not_a_dict", "d.pt", _torch_save(lambda: [1, 2, 3]), "", "train", ("E0703", *AT_DATA)),
    ("pt_ragged", "d.pt", _torch_save(lambda: _arrays(6, rows=5)), "", "train", ("E0703", *AT_DATA)),
    ("pt_malicious_pickle", "d.pt", _evil_pickle, "", "train", ("E0703", *AT_DATA)),
    ("pt_garbage", "d.pt", _text(b"\x00\x01garbage"), "", "train", ("E0703", *AT_DATA)),
    ("missing_data_file", "d.npz", lambda path: None, "", "check", ("E0702", *AT_DATA)),
    # issue 27: labels, sizes, headers and tensors that used to end in raw exceptions or run out of bounds
    ("csv_label_outside_classes", "d.csv", _rows_csv(*GOOD_ROWS[:4], "1,2,7", *GOOD_ROWS[4:]), "", "train",
     ("E0703", "d.csv", 6, 5)),
    ("csv_label_minus_100", "d.csv", _rows_csv(*GOOD_ROWS[:2], "1,2,-100", *GOOD_ROWS[2:]), "", "train",
     ("E0703", "d.csv", 4, 5)),
    ("csv_label_1e20", "d.csv", _rows_csv(*GOOD_ROWS[:2], "1,2,1e20", *GOOD_ROWS[2:]), "", "check",
     ("E0703", "d.csv", 4, 5)),
    ("csv_long_quoted_field", "d.csv", _rows_csv("1,2,0", '"' + "9" * 140_000 + '",2,1', *GOOD_ROWS), "", "check",
     ("E0703", "d.csv", 3, 1)),
    ("csv_cr_only", "d.csv", _text("a,b,y\r" + "".join(r + "\r" for r in GOOD_ROWS)), "", "check",
     ("E0703", "d.csv", 1, 6)),
    ("csv_header_only", "d.csv", _rows_csv(), "", "train", ("E0703", *AT_DATA)),
    ("csv_one_row", "d.csv", _rows_csv("1,2,0"), "", "train", ("E0703", *AT_DATA)),
    ("csv_fifo", "d.csv", _fifo, "", "check", ("E0703", *AT_DATA)),
    ("csv_dev_zero", "d.csv", _link_to_dev_zero, "", "check", ("E0703", *AT_DATA)),
    ("npz_fifo", "d.npz", _fifo, "", "check", ("E0703", *AT_DATA)),
    ("npz_label_outside_classes", "d.npz", _npz_good(y=[0, 1, 2, 1, 0, 1]), "", "train", ("E0703", *AT_DATA)),
    ("npz_zero_rows", "d.npz", _npz_good(x=lambda f: f["x"][:0], y=lambda f: f["y"][:0]), "", "train", ("E0703", *AT_DATA)),
    ("npz_one_row", "d.npz", _npz_good(x=lambda f: f["x"][:1], y=[1]), "", "train", ("E0703", *AT_DATA)),
    ("npz_header_a_list", "d.npz", _npy_header(b"[1, 2, 3]\n"), "", "check", ("E0703", *AT_DATA)),
    ("npz_header_shape_not_a_tuple", "d.npz", _npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': 5}"),
     "", "check", ("E0703", *AT_DATA)),
    ("npz_header_nested", "d.npz", _npy_header(b"(" * 3000 + b")" * 3000), "", "check", ("E0703", *AT_DATA)),
    ("npz_header_negative_shape", "d.npz",
     _npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (-3, 2)}"), "", "check", ("E0703", *AT_DATA)),
    ("npz_header_more_than_stored", "d.npz",
     _npy_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 2)}"), "", "check",
     ("E0703", *AT_DATA)),
    ("pt_stride_0", "d.pt", _torch_save(_tensors(x=lambda: __import__("torch").ones(1, 2).expand(100_000, 2),
                                                 y=lambda: __import__("torch").zeros(1).long().expand(100_000))),
     "", "train", ("E0703", *AT_DATA)),
    ("pt_meta_device", "d.pt", _torch_save(_tensors(x=lambda: __import__("torch").ones(6, 2, device="meta"))), "",
     "train", ("E0703", *AT_DATA)),
    ("pt_float8", "d.pt", _torch_save(_tensors(x=lambda: __import__("torch").ones(6, 2).to(
        __import__("torch").float8_e4m3fn))), "", "train", ("E0703", *AT_DATA)),
    ("pt_sparse", "d.pt", _torch_save(_tensors(x=lambda: __import__("torch").ones(6, 2).to_sparse())), "", "train",
     ("E0703", *AT_DATA)),
    ("pt_requires_grad", "d.pt", _torch_save(_tensors(x=lambda: __import__("torch").ones(6, 2, requires_grad=True))),
     "", "train", ("E0703", *AT_DATA)),
    ("pt_label_outside_classes", "d.pt", _torch_save(_tensors(y=lambda: __import__("torch").arange(6))), "", "train",
     ("E0703", *AT_DATA)),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_file_case(case, tmp_path: Path):
    _, name, make, extra, command, (code, where, line, col) = case
    make(tmp_path / name)
    spec = tmp_path / "spec.dsl"
    spec.write_text(DATA_SPEC.replace("{name}", name).replace("{extra}", extra))
    args = [command, str(spec), "--json"] + (["--out", str(tmp_path / "run"), "--quiet"] if command == "train" else [])
    rc, out, err = run_cli(*args)
    assert rc == 1, (out, err)
    assert "Traceback" not in err and "internal error" not in err
    rows = [r for r in json.loads(out) if r["severity"] == "error"]
    assert rows, err
    first = rows[0]
    assert (first["code"], first["line"], first["col"]) == (code, line, col), rows
    assert Path(first["file"]).name == (spec.name if where == "spec" else where)
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "run").exists()
