"""The `dsl` command line (the top layer): argument parsing and exit codes."""

from dsl.cli.main import main

__all__ = ["main"]
