"""`dsl lsp`: the language server, over stdin and stdout (docs/EDITORS.md).

Editors start it themselves; ``--stdio`` is accepted because many of them pass
it. The server's module imports pygls, so it is imported only when the command
runs (``dsl --help`` and ``dsl check`` stay light).
"""

from __future__ import annotations

import argparse

NAME = "lsp"
HELP = "run the language server over stdio (for editors: diagnostics, hover, completion)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stdio", action="store_true", help="speak over stdin/stdout (the default and only way)")


def run(args: argparse.Namespace) -> int:
    from dsl.tools.lsp.server import serve

    serve()
    return 0
