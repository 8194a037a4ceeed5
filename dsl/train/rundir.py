"""The run directory: resolved spec, weights, optimizer/RNG state, metrics, meta.

Every file is written atomically (a temp file in the same directory, then
``os.replace``), so a killed run never leaves a torn file. A checkpoint is
``model.safetensors`` + ``state.pt`` (both stamped with their epoch) and
``meta.json`` is written last: its epoch is the commit point that resume trusts.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

SPEC_FILE = "spec.dsl"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"


class ResumeError(Exception):
    """A checkpoint that cannot be resumed; the message says why."""


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the temp file onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def spec_text(spec: Any) -> str:
    """The resolved spec's canonical text, or the source text when no printer exists."""
    try:
        return spec.to_text()
    except Exception:  # the printer may be missing or reject an unusual spec
        try:
            with open(spec.file, encoding="utf-8") as fh:
                return fh.read()
        except (OSError, TypeError):
            return spec.model_dump_json()


def spec_hash(text: str, overrides: dict[str, Any], dims: dict[str, int]) -> str:
    """sha256 of what determines the model and its training (epochs excluded: resume may extend)."""
    payload = json.dumps({"spec": text, "overrides": overrides, "dims": dims}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("dsl", "torch", "torch_geometric", "safetensors"):
        try:
            from importlib.metadata import version

            out[mod] = version(mod.replace("_", "-"))
        except Exception:
            out[mod] = "unknown"
    return out


def default_dir(model_name: str, root: str = "runs") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(root, f"{model_name}-{stamp}")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(root, f"{model_name}-{stamp}-{n}")
    return path


class RunDir:
    def __init__(self, path: str):
        self.path = path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def exists(self) -> bool:
        return os.path.exists(self.file(META_FILE))

    # -- writing
    def start(self, text: str, meta: dict[str, Any]) -> None:
        os.makedirs(self.path, exist_ok=True)
        atomic_text(self.file(SPEC_FILE), text)
        self.write_meta(meta)

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_text(self.file(META_FILE), json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        # Rewriting the (small) file keeps the append atomic as well.
        lines = self.read_metrics()
        lines.append(record)
        atomic_text(self.file(METRICS_FILE), "".join(json.dumps(r, default=_num) + "\n" for r in lines))

    def truncate_metrics(self, epoch: int) -> None:
        lines = [r for r in self.read_metrics() if r.get("epoch", 0) <= epoch]
        atomic_text(self.file(METRICS_FILE), "".join(json.dumps(r, default=_num) + "\n" for r in lines))

    def save_weights(self, state_dict: dict[str, Any], epoch: int, name: str = MODEL_FILE) -> None:
        from safetensors.torch import save_file

        # Clone: safetensors refuses tensors that share storage (tied weights, views).
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
        atomic_write(self.file(name), lambda tmp: save_file(tensors, tmp, metadata={"epoch": str(epoch)}))

    def save_state(self, state: dict[str, Any]) -> None:
        import torch

        atomic_write(self.file(STATE_FILE), lambda tmp: torch.save(state, tmp))

    # -- reading
    def read_meta(self) -> dict[str, Any]:
        with open(self.file(META_FILE), encoding="utf-8") as fh:
            return json.load(fh)

    def read_metrics(self) -> list[dict[str, Any]]:
        try:
            with open(self.file(METRICS_FILE), encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        except FileNotFoundError:
            return []

    def load_weights(self, name: str = MODEL_FILE) -> tuple[dict[str, Any], int | None]:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self.file(name)
        with safe_open(path, framework="pt") as fh:
            meta = fh.metadata() or {}
        epoch = int(meta["epoch"]) if "epoch" in meta else None
        return load_file(path), epoch

    def load_state(self) -> dict[str, Any]:
        import torch

        return torch.load(self.file(STATE_FILE), weights_only=True)


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
