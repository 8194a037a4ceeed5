"""Training hooks: behaviour that joins the loop without editing it.

A hook module in this package defines ``make(trainer) -> Hook | None``; the
trainer calls every module's ``make`` once it is built and keeps the hooks
that are returned (``None`` means "not configured for this run"). Hooks see
the trainer, may add keys to an epoch's record before it is written to
``metrics.jsonl``, and may keep state that is checkpointed with the run.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


class Hook:
    """No-op base; override what you need."""

    name = "hook"

    def on_fit_start(self, trainer: Any) -> None:
        """Before the first epoch of this call to ``fit`` (after a resume has loaded state)."""

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        """Before epoch ``epoch`` (counting from 0) trains."""

    def after_step(self, trainer: Any, epoch: int, step: int) -> None:
        """After each optimizer step; ``epoch`` counts from 0."""

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """After evaluation, before the record is written and the checkpoint saved."""

    def on_fit_end(self, trainer: Any) -> None:
        """After the last epoch (also after an early stop)."""

    def selectable(self, trainer: Any, record: dict[str, Any]) -> bool:
        """Whether this epoch's weights may be chosen as the run's best (after :meth:`on_epoch_end`)."""
        return True

    def summary(self, trainer: Any) -> list[Any]:
        """Rich renderables (or strings) shown after the final table of ``dsl train``."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def make_hooks(trainer: Any) -> list[Hook]:
    """The hooks configured for ``trainer``, in module-name order."""
    hooks: list[Hook] = []
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        hook = module.make(trainer)
        if hook is not None:
            hooks.append(hook)
    return hooks
