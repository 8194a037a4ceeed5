"""`dsl export RUN --to onnx|pt2|python [--best] [-o OUT]`: a trained run as a file of its own.

The artefact holds the run's weights and its input preprocessing, so raw inputs give what
``dsl predict`` gives (:mod:`dsl.exporting.runs`); it is checked against the run's module
before it is kept. Without ``-o`` it is written to the current folder, named after the
model (``classifier.onnx``). Exit codes: 0 written and checked, 1 a spec, run or export
problem (a failed check removes the file), 2 usage errors.
"""

from __future__ import annotations

import argparse
import re
import sys

NAME = "export"
HELP = "export a trained run (weights and input preprocessing) to onnx, pt2 or python"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or one of its .safetensors)")
    parser.add_argument("--to", required=True, choices=["onnx", "pt2", "python"], help="the format")
    parser.add_argument("-o", "--output", metavar="OUT", help="the file to write (default: <model>.<format> here)")
    parser.add_argument("--best", action="store_true", help="the weights the validation split chose")
    parser.add_argument("--spec", default=None, help="use this spec instead of the run's")
    parser.add_argument("--json", action="store_true", help="print diagnostics, or what was written, as JSON")


def default_output(model: str, fmt: str) -> str:
    """``Classifier`` -> ``classifier.onnx``; ``MoEDigits`` -> ``moe_digits.py`` (an importable name)."""
    from dsl.exporting.runs import FORMATS

    snake = re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", model).lower()
    return snake + FORMATS[fmt]


def run(args: argparse.Namespace) -> int:
    import json

    from dsl.cli.main import UsageError, emit_diagnostics
    from dsl.exporting.formats import ExportError, onnx_missing
    from dsl.exporting.runs import export_trained
    from dsl.training.runs import open_run

    if args.to == "onnx" and onnx_missing():
        raise UsageError(onnx_missing())
    opened = open_run(args.run, args.best, args.spec)
    prog = opened.prepared.analysis.program
    assert prog is not None
    path = args.output or default_output(prog.name, args.to)
    try:
        done = export_trained(opened.trained(), prog, opened.preprocessing, args.to, path,
                              source=opened.run.file(opened.weights_file))
    except ExportError as e:
        emit_diagnostics(e.to_diagnostics(prog.span), args.json)
        return 1
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps({"files": done.files, "max_abs_diff": done.diffs}))
        return 0
    worst = done.worst
    check = ("no numerical check (pip install onnxruntime)" if worst is None
             else f"max abs diff {worst[1]:.3g} against the run's module, at `{worst[0]}`")
    print(f"wrote {', '.join(done.files)} ({check})", file=sys.stderr)
    return 0
