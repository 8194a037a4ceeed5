"""`dsl convert FILE --to yaml|dsl [-o OUT]`: text <-> YAML through the IR.

Text -> YAML -> text gives exactly the canonical (``dsl fmt``) text, comments
and blank lines included; YAML -> text -> YAML gives the same IR. Comments
travel as YAML comments: one before a statement stays before it, one after a
statement stays on its line. YAML has no ``}``, so a comment written after a
closing brace comes back on the line before it. Without ``-o`` the result goes
to stdout. Exit codes: 0 done, 1 the spec does not parse, 2 usage errors.
"""

from __future__ import annotations

import argparse
import os

NAME = "convert"
HELP = "convert a spec between text (.dsl) and YAML, comments kept"

_EXTENSIONS = {".dsl": "dsl", ".yaml": "yaml", ".yml": "yaml"}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="spec file (.dsl or .yaml)")
    parser.add_argument("--to", required=True, choices=["yaml", "dsl"], help="target format")
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="write here (atomically) instead of stdout"
    )
    parser.add_argument("--json", action="store_true", help="print diagnostics as JSON")


def convert(path: str, to: str) -> str:
    """The spec of ``path`` written in format ``to``; SpecError when it does not parse."""
    from dsl.cli.output import load_with_source
    from dsl.language.printer import to_text
    from dsl.language.yaml_writer import to_yaml

    spec, _ = load_with_source(path)
    return to_yaml(spec) if to == "yaml" else to_text(spec)


def run(args: argparse.Namespace) -> int:
    from dsl.cli.main import UsageError
    from dsl.cli.output import emit

    if args.output and args.output != "-":
        ext = os.path.splitext(args.output)[1].lower()
        if ext in _EXTENSIONS and _EXTENSIONS[ext] != args.to:
            raise UsageError(f"-o {args.output} has a {ext} name but --to is {args.to}")
        if os.path.abspath(args.output) == os.path.abspath(args.file):
            raise UsageError("-o names the input file; use `dsl fmt` to rewrite a spec in place")
    emit(convert(args.file, args.to), args.output)
    return 0
