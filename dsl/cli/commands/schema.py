"""`dsl schema [-o OUT]`: the JSON Schema (draft 2020-12) of YAML specs.

Generated from the IR structure and every registered block's params (plugins
included), so it never drifts from the code. Point an editor's YAML language
server at it with a first line such as
``# yaml-language-server: $schema=./spec.schema.json`` (see docs/TOOLS.md).
"""

from __future__ import annotations

import argparse

NAME = "schema"
HELP = "print the JSON Schema of YAML specs (for editors' YAML language servers)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="write here (atomically) instead of stdout"
    )


def run(args: argparse.Namespace) -> int:
    import json

    from dsl.cli.output import emit
    from dsl.tools.schema import spec_schema

    emit(json.dumps(spec_schema(), indent=2, ensure_ascii=False) + "\n", args.output)
    return 0
