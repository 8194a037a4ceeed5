"""The run directory: resolved spec, weights, optimizer/RNG state, metrics, meta.

Crash safety (a ``kill -9`` at any moment, then ``--resume``, must continue
from a consistent checkpoint):

* Every file is written atomically: a temp file in the same directory,
  flushed and fsynced, then ``os.replace`` onto its name, then the directory
  fsynced. A kill mid-write leaves the old file and a stray ``.*.tmp``.
* A checkpoint is several files (``model.safetensors``, ``state.pt``,
  ``best.safetensors``, all stamped with their epoch) that must change
  together. They are first written as ``.pending-<epoch>-<name>``;
  :meth:`RunDir.write_meta` then writes ``meta.json`` (the commit point: its
  epoch is what resume trusts) and only then moves the pending files onto
  their names. :meth:`RunDir.recover` (called before a resume) finishes a
  commit that a kill interrupted (pending files of meta's epoch are moved in)
  and discards an uncommitted one (any other pending file, any temp file).
* :meth:`RunDir.probe` writes and removes a small file before training starts,
  so an unwritable or full output directory is an error up front, and
  :meth:`RunDir.check_space` refuses to start without room for checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from typing import Any

from dsl.language.errors import RunError
from dsl.language.files import atomic_text, atomic_write, fsync_path

SPEC_FILE = "spec.dsl"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"
PENDING = ".pending-"  # .pending-<epoch>-<name>: written, not yet committed by meta.json
PROBE_BYTES = 64 * 1024


class ResumeError(RunError):
    """A checkpoint that cannot be resumed; the message says why."""


class RunDirError(RunError):
    """The output directory cannot hold the run (unwritable, full); the message names it."""


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
        """Write meta.json — the commit point — then move in the pending files of its epoch."""
        atomic_text(self.file(META_FILE), json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        self._settle(int(meta.get("epoch", 0) or 0))

    def _pending(self, name: str, epoch: int) -> str:
        return self.file(f"{PENDING}{int(epoch)}-{name}")

    def _settle(self, epoch: int) -> None:
        """Pending files of ``epoch`` become the checkpoint; pending files of any other epoch are dropped."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return
        for entry in sorted(names):
            if not entry.startswith(PENDING):
                continue
            stamp, _, name = entry[len(PENDING):].partition("-")
            if stamp == str(epoch) and name:
                os.replace(self.file(entry), self.file(name))
            else:
                os.unlink(self.file(entry))
        fsync_path(self.path)

    def recover(self) -> None:
        """Make the directory consistent after a crash: finish or discard the last checkpoint write."""
        if not self.exists():
            return
        epoch = int(self.read_meta().get("epoch", 0) or 0)
        self._settle(epoch)
        for entry in os.listdir(self.path):
            if entry.startswith(".") and entry.endswith(".tmp"):  # a temp file a kill left mid-write
                os.unlink(self.file(entry))

    def has_checkpoint(self) -> bool:
        return os.path.exists(self.file(STATE_FILE)) and os.path.exists(self.file(MODEL_FILE))

    def probe(self) -> None:
        """Fail now, naming the path, if the directory cannot be created or written (read-only, full)."""
        created = not os.path.isdir(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".probe-", suffix=".tmp")
            try:
                os.write(fd, b"\0" * PROBE_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(tmp)
        except OSError as e:
            raise RunDirError(f"cannot write to the output directory {self.path}: {e.strerror or e}") from None
        if created:  # leave no empty run directory behind if the run fails before it starts
            try:
                os.rmdir(self.path)
            except OSError:
                pass

    def check_space(self, need: int) -> None:
        """Refuse to start when the disk holding the directory has less than ``need`` bytes free."""
        folder = os.path.abspath(self.path)
        while not os.path.exists(folder) and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        free = shutil.disk_usage(folder).free
        if free < need:
            raise RunDirError(
                f"not enough space for checkpoints in {self.path}: about {_mb(need)} needed, {_mb(free)} free"
            )

    def append_metrics(self, record: dict[str, Any]) -> None:
        # Rewriting the (small) file keeps the append atomic as well.
        lines = self.read_metrics()
        lines.append(record)
        atomic_text(self.file(METRICS_FILE), "".join(json.dumps(r, default=_num) + "\n" for r in lines))

    def truncate_metrics(self, epoch: int) -> None:
        lines = [r for r in self.read_metrics() if r.get("epoch", 0) <= epoch]
        atomic_text(self.file(METRICS_FILE), "".join(json.dumps(r, default=_num) + "\n" for r in lines))

    def save_weights(self, state_dict: dict[str, Any], epoch: int, name: str = MODEL_FILE) -> None:
        """Stage weights stamped with ``epoch``; :meth:`write_meta` of that epoch commits them."""
        from safetensors.torch import save_file

        # Clone: safetensors refuses tensors that share storage (tied weights, views).
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
        atomic_write(self._pending(name, epoch), lambda tmp: save_file(tensors, tmp, metadata={"epoch": str(epoch)}))

    def save_state(self, state: dict[str, Any]) -> None:
        """Stage the optimizer/RNG state (``state["epoch"]`` stamps it) until :meth:`write_meta` commits it."""
        import torch

        epoch = int(state.get("epoch", 0))
        atomic_write(self._pending(STATE_FILE, epoch), lambda tmp: torch.save(state, tmp))

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


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
