"""`dsl fmt FILE... [--check] [--stdout]`: rewrite specs in their canonical layout.

Text specs are printed by :func:`dsl.language.printer.to_text`; YAML specs by
the YAML writer (:func:`dsl.language.yaml_writer.to_yaml`). Both keep comments
and blank lines, and both are idempotent. Before anything is written, the
result is read back and compared with the original IR: a formatter must never
change what a spec means. Files are replaced atomically and only when they
change. Exit codes: 0 done (or nothing to do), 1 a spec does not parse or
``--check`` found files to reformat, 2 usage errors.
"""

from __future__ import annotations

import argparse
import sys

NAME = "fmt"
HELP = "format specs in the canonical layout (comments kept)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="+", help="spec files (.dsl, .yaml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="change nothing; list the files that would change and exit 1 if any",
    )
    mode.add_argument(
        "--stdout", action="store_true", help="print the formatted specs instead of writing them"
    )
    parser.add_argument("--json", action="store_true", help="print diagnostics as JSON")


def formatted(path: str) -> tuple[str, str]:
    """(source, canonical text) of one spec file; SpecError when it does not parse."""
    from dsl.cli.output import load_with_source
    from dsl.tools.formatting import canonical

    spec, source = load_with_source(path)
    return source, canonical(spec)


def run(args: argparse.Namespace) -> int:
    from dsl.cli.main import emit_diagnostics
    from dsl.cli.output import write_atomic
    from dsl.language.diagnostics import Diagnostic
    from dsl.language.errors import SpecError

    diags: list[Diagnostic] = []
    sources: dict[str, str] = {}
    changed: list[str] = []
    for path in args.file:
        try:
            source, text = formatted(path)
        except SpecError as e:
            diags.extend(e.diagnostics)
            sources.update(e.sources)
            continue
        if args.stdout:
            sys.stdout.write(text)
        elif text != source:
            changed.append(path)
            if not args.check:
                write_atomic(path, text)
    emit_diagnostics(diags, args.json, sources)
    for path in changed:
        print(f"would reformat {path}" if args.check else f"reformatted {path}")
    if args.check and not changed and not diags:
        print(
            f"{len(args.file)} file{'s' if len(args.file) != 1 else ''} already formatted",
            file=sys.stderr,
        )
    return 1 if diags or (args.check and changed) else 0
