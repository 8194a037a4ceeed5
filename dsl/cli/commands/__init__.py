"""Subcommands of ``dsl`` beyond the core ones, one module per command.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line),
``register(parser)`` (adds its arguments to an argparse parser) and
``run(args) -> int`` (the exit code). Modules are found by listing this
package, so adding a command never edits :mod:`dsl.cli`. Keep module-level
imports light: ``dsl --help`` and ``dsl check`` import every one of them;
heavy imports (torch, rich) belong inside ``run``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def command_modules() -> list[ModuleType]:
    """Every command module in this package, sorted by name."""
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return [importlib.import_module(f"{__name__}.{name}") for name in found]
