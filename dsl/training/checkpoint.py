"""Weights into a model, with a message that says exactly what does not fit."""

from __future__ import annotations

from typing import Any

from dsl.language.errors import RunError

SHOWN = 4  # names listed per kind of mismatch


def mismatch(expected: dict[str, Any], found: dict[str, Any]) -> str | None:
    """What separates a checkpoint's tensors (``found``) from a model's state dict; None if they fit."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"`{k}` is {list(found[k].shape)} in the checkpoint, {list(v.shape)} in the model"
              for k, v in expected.items() if k in found and tuple(found[k].shape) != tuple(v.shape)]
    parts = []
    if shapes:
        parts.append(f"{len(shapes)} weight(s) differ in shape ({_some(shapes)})")
    if missing:
        parts.append(f"{len(missing)} weight(s) of the model are not in the checkpoint ({_some(missing, '`')})")
    if unexpected:
        parts.append(f"{len(unexpected)} weight(s) of the checkpoint are not in the model ({_some(unexpected, '`')})")
    return "; ".join(parts) or None


def _some(items: list[str], quote: str = "") -> str:
    shown = ", ".join(f"{quote}{i}{quote}" for i in items[:SHOWN])
    return shown + (f", and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def load_into(model: Any, weights: dict[str, Any], where: str, hint: str = "") -> None:
    """``model.load_state_dict(weights)``; a RunError naming every kind of mismatch otherwise."""
    problem = mismatch(model.state_dict(), weights)
    if problem is None:
        try:
            model.load_state_dict(weights)
            return
        except RuntimeError as exc:  # dtypes torch cannot copy: rare, keep all of torch's lines
            problem = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    raise RunError(f"the checkpoint {where} does not fit this spec: {problem}{hint}")
