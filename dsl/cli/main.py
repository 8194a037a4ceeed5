"""The `dsl` command line. Exit codes: 0 valid, 1 spec errors, 2 usage errors.

`dsl check` imports neither torch nor rich: it must feel instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from dsl.language.diagnostics import MAX_SHOWN, Diagnostic, render_all, sort_diagnostics
from dsl.language.errors import DslError, RunError, SpecError


class UsageError(DslError):
    pass


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--epoch 2` is a typo, not `--epochs`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # exit 2 with a short message, as argparse does
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_common(p: argparse.ArgumentParser, files: str | None = "+", file_help: str = "spec file (.dsl or .yaml)") -> None:
    p.add_argument("file", nargs=files, help=file_help)
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="override a param, a train key or an argument (lr=0.01, optimizer.lr=0.01); "
                        "a comma list sweeps (dsl train)")
    p.add_argument("--dim", action="append", default=[], metavar="N=34", help="bind a symbolic dim")
    p.add_argument("--json", action="store_true", help="print diagnostics as JSON")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    p.add_argument("--max-params", type=_count, default=None, metavar="N",
                   help="refuse a model with more parameters (default 1e9)")


def device_name(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (argparse: other values exit 2)."""
    kind, colon, index = text.partition(":")
    if text in ("cpu", "cuda") or (kind == "cuda" and colon and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def _count(text: str) -> int:
    """A positive count such as 5000000, 5e6 or 5_000_000 (argparse: bad values exit 2)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of parameters, got {text!r}") from None
    if not value >= 1 or value > 1e18:
        raise argparse.ArgumentTypeError(f"expected a count between 1 and 1e18, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dsl", description="Compose, check, compile and train neural network specs.")
    parser.add_argument("--version", action="version", version="dsl 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("check", help="parse, resolve and check specs (no torch import)")
    _add_common(p)

    p = sub.add_parser("compile", help="build the module and print a summary")
    _add_common(p, files=None)
    p.add_argument("--emit", choices=["summary", "python", "pt2", "onnx"], default="summary",
                   help="a summary table, or a file (-o): standalone python, torch.export pt2, onnx")
    p.add_argument("-o", "--output", metavar="OUT", help="write the result here")
    p.add_argument("--no-guards", action="store_true", help="build without runtime input checks (dsl.building.guards)")

    p = sub.add_parser("train", help="train the model of a spec")
    _add_common(p, files=None)
    p.add_argument("--no-guards", action="store_true", help="skip the per-call input checks (dsl.building.guards)")
    p.add_argument("--epochs", type=int, default=None, help="override the train section's epochs")
    p.add_argument("--seed", type=int, default=None, help="override the train section's seed")
    p.add_argument("--device", type=device_name, default="cpu", metavar="cpu|cuda|cuda:N")
    p.add_argument("--out", default=None, help="run directory (a sweep: the folder of its runs)")
    p.add_argument("--logger", action="append", default=[], choices=["csv", "tensorboard"],
                   help="log per step and per epoch (added to the train section's loggers)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    p.add_argument("--nproc", type=int, default=1, help="processes for DistributedDataParallel")
    p.add_argument("--quiet", action="store_true", help="plain lines, no progress bar")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")

    run_help = "run directory (or one of its .safetensors); the spec when --ckpt names the run"
    p = sub.add_parser("eval", help="evaluate a run on its validation and test splits, every metric")
    _add_common(p, files="?", file_help=run_help)
    _add_run_options(p)

    p = sub.add_parser("predict", help="write a run's predictions (class, probabilities, outputs)")
    _add_common(p, files="?", file_help=run_help)
    _add_run_options(p)
    p.add_argument("--data", default=None, help="raw inputs (.npz, .pt, .csv; no label needed); "
                   "default: the spec's test split")
    p.add_argument("--out", required=True, help="where to write: .npz, .csv, .parquet or .pt")

    p = sub.add_parser("blocks", help="the block catalogue (or the train section's data, losses, metrics, optimizers)")
    p.add_argument("name", nargs="?", help="one block or function")
    p.add_argument("--json", action="store_true")
    lists = p.add_mutually_exclusive_group()
    for flag, what in (("data", "data sources"), ("losses", "loss functions"), ("metrics", "metrics"),
                       ("optimizers", "optimizers and schedules")):
        lists.add_argument(f"--{flag}", dest="listing", action="store_const", const=flag,
                           help=f"list the train section's {what}")
    p.add_argument("--debug", action="store_true")
    _add_plugin_commands(sub)
    return parser


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default=None, help="run directory (the older form: dsl eval SPEC --ckpt RUN)")
    p.add_argument("--spec", default=None, help="use this spec instead of the run's")
    p.add_argument("--best", action="store_true", help="the weights the validation split chose (best.safetensors)")
    p.add_argument("--device", type=device_name, default="cpu", metavar="cpu|cuda|cuda:N")


def _add_plugin_commands(sub: Any) -> None:
    """Subcommands that live in :mod:`dsl.cli.commands`, one module each."""
    from dsl.cli.commands import command_modules

    for module in command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP)
        module.register(p)
        if not any(a.dest == "debug" for a in p._actions):
            p.add_argument("--debug", action="store_true", help="show Python tracebacks")
        p.set_defaults(_run=module.run)


def parse_assignments(items: Sequence[str], what: str, dotted: bool = False) -> dict[str, str]:
    """``NAME=VALUE`` pairs; with ``dotted``, NAME may also be ``SECTION.ARG`` (``optimizer.lr``)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        parts = key.split(".") if dotted else [key]
        if not sep or len(parts) > 2 or not all(part.isidentifier() for part in parts):
            raise UsageError(f"{what} expects NAME=VALUE{' or SECTION.ARG=VALUE' if dotted else ''}, got {item!r}")
        out[key] = value.strip()
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    from dsl.language.resolve import parse_override

    return {k: parse_override(v) for k, v in parse_assignments(items, "--set", dotted=True).items()}


def parse_dims(items: Sequence[str]) -> dict[str, int]:
    dims: dict[str, int] = {}
    for k, v in parse_assignments(items, "--dim").items():
        try:
            dims[k] = int(v)
        except ValueError:
            raise UsageError(f"--dim {k} needs an integer, got {v!r}") from None
        if dims[k] < 0:
            raise UsageError(f"--dim {k} must be non-negative")
    return dims


def emit_diagnostics(diags: list[Diagnostic], as_json: bool, sources: dict[str, str] | None = None) -> None:
    """Every diagnostic as JSON on stdout; as text on stderr, the first MAX_SHOWN and a count of the rest."""
    diags = sort_diagnostics(diags)
    if as_json:
        print(json.dumps([d.to_dict() for d in diags], indent=2))
        return
    if diags:
        print(render_all(diags, sources or {}, limit=MAX_SHOWN), file=sys.stderr)


def emit_error(prefix: str, err: DslError, as_json: bool) -> None:
    """A run-directory error with a code as a diagnostic (JSON with ``--json``); others as one line."""
    diag = err.diagnostic() if isinstance(err, RunError) else None
    if diag is not None:
        emit_diagnostics([diag], as_json)
    else:
        print(f"{prefix}: error: {err}", file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    from dsl.api import analyse, load

    overrides = parse_overrides(args.set)
    dims = parse_dims(args.dim)
    all_diags: list[Diagnostic] = []
    for path in args.file:
        try:
            spec = load(path)
        except SpecError as e:
            all_diags.extend(e.diagnostics)
            continue
        all_diags.extend(analyse(spec, dims, overrides, args.max_params).diagnostics)
    errors = [d for d in all_diags if d.severity == "error"]
    emit_diagnostics(all_diags, args.json)
    if not args.json and not errors:
        names = ", ".join(args.file)
        print(f"ok: {names}", file=sys.stderr)
    return 1 if errors else 0


def cmd_compile(args: argparse.Namespace) -> int:
    from dsl.api import analyse, load

    overrides = parse_overrides(args.set)
    dims = parse_dims(args.dim)
    try:
        spec = load(args.file)
    except SpecError as e:
        emit_diagnostics(e.diagnostics, args.json)
        return 1
    analysis = analyse(spec, dims, overrides, args.max_params)
    if not analysis.ok or analysis.program is None:
        emit_diagnostics(analysis.diagnostics, args.json)
        return 1
    if analysis.diagnostics and not args.json:  # warnings (a broken plugin); --json keeps stdout for the summary
        emit_diagnostics(analysis.diagnostics, False)
    from dsl.building.model import build_model
    from dsl.building.summary import print_summary, summary_rows

    # the module as dsl.compile returns it (export traces past the guard)
    model = build_model(analysis, guards=not getattr(args, "no_guards", False))
    prog = analysis.program

    if args.emit != "summary":
        return _export(args, prog, model)
    if args.json:
        print(json.dumps(summary_rows(prog, model), indent=2))
    else:
        print_summary(prog, model, file=args.output)
    return 0


def _export(args: argparse.Namespace, prog: Any, model: Any) -> int:
    """``--emit python|pt2|onnx``: write the file, check it against ``model``, report the difference.

    A file that fails its check is removed. ``--emit python`` without ``-o`` prints the file
    (checked through a temporary copy), as ``dsl convert`` does."""
    if not args.output:
        if args.emit != "python":
            raise UsageError(f"--emit {args.emit} needs -o OUT")
        return _python_to_stdout(args, prog, model)
    from dsl.exporting.formats import ExportError, export_onnx, export_pt2, onnx_missing

    try:
        if args.emit == "python":
            from dsl.exporting.python import write_python

            diff = write_python(prog, model, args.output, source=args.file)
        elif args.emit == "onnx":
            missing = onnx_missing()
            if missing:
                raise UsageError(missing)
            diff = export_onnx(model, prog, args.output)
        else:
            diff = export_pt2(model, prog, args.output)
    except ExportError as e:
        _remove(args.output)
        emit_diagnostics(e.to_diagnostics(prog.span), args.json)
        return 1
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror or e}") from None
    check = "no numerical check (pip install onnxruntime)" if diff is None else f"max abs diff {diff:.3g}"
    if diff is not None and not diff <= 1e-4:
        _remove(args.output)
        print(f"dsl compile: error: {args.output} disagrees with the compiled module ({check}); "
              "the file was removed", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({check} against the compiled module on random inputs)", file=sys.stderr)
    return 0


def _remove(path: str) -> None:
    """Drop a written file that failed its check (a regular file only: never /dev/null)."""
    if os.path.isfile(path) and not os.path.islink(path):
        os.unlink(path)


def _python_to_stdout(args: argparse.Namespace, prog: Any, model: Any) -> int:
    import tempfile

    from dsl.exporting.formats import ExportError
    from dsl.exporting.python import write_python

    with tempfile.TemporaryDirectory(prefix="dsl-emit-") as folder:
        path = os.path.join(folder, f"{prog.name}.py")
        try:
            diff = write_python(prog, model, path, source=args.file)
        except ExportError as e:
            emit_diagnostics(e.to_diagnostics(prog.span), args.json)
            return 1
        if not diff <= 1e-4:
            print(f"dsl compile: error: the generated file disagrees with the compiled module (max abs diff "
                  f"{diff:.3g})", file=sys.stderr)
            return 1
        with open(path, encoding="utf-8") as fh:
            sys.stdout.write(fh.read())
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    if getattr(args, "listing", None):
        from dsl.tools.train_catalogue import show_listing

        return show_listing(args.listing, args.json)
    from dsl.tools.catalogue import show_blocks

    return show_blocks(args.name, args.json)


def _train_command(name: str):
    def run(args: argparse.Namespace) -> int:
        from dsl.cli import training

        return getattr(training, f"cmd_{name}")(args)

    return run


COMMANDS = {
    "check": cmd_check,
    "compile": cmd_compile,
    "train": _train_command("train"),
    "eval": _train_command("eval"),
    "predict": _train_command("predict"),
    "blocks": cmd_blocks,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "debug", False) or bool(os.environ.get("DSL_DEBUG"))
    try:
        run = COMMANDS.get(args.command) or args._run
        return run(args)
    except UsageError as e:
        print(f"dsl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except SpecError as e:
        emit_diagnostics(e.diagnostics, getattr(args, "json", False), e.sources)
        return 1
    except DslError as e:  # a run, data or export problem: a diagnostic when it has a code, else one line
        if debug:
            raise
        emit_error(f"dsl {args.command}", e, getattr(args, "json", False))
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`dsl blocks --json | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except Exception as e:  # never a traceback without --debug
        if debug:
            raise
        print(f"dsl {args.command}: internal error: {type(e).__name__}: {e}\n"
              "  (run again with --debug for the traceback; please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
