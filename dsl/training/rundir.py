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

One run per directory: :meth:`RunDir.lock` takes an exclusive ``flock`` on
``.lock`` (holding the writer's pid) before anything is written; a second
writer is refused at once (E0705), naming the first's pid.

A run directory is untrusted input (someone else's run, a tampered one). Each
of its files is read only when it is a regular file inside the directory and
under its size limit (``MAX_*_BYTES``), with one bounded read, and is
validated before use: wrong JSON types, deep nesting, a pickle that is not
plain tensors, a negative epoch are all E0704 naming the file. Readers
(``eval``, ``predict``, ``explain``, ``inspect``) write nothing: they read the
checkpoint that ``meta.json`` committed, taking a pending file of its epoch
where a kill left one (what :meth:`RunDir.recover` would move in).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import stat
import tempfile
import time
from typing import Any

from dsl.language.errors import RunError, SpecError
from dsl.language.files import atomic_text, atomic_write, fsync_path, read_bounded
from dsl.language.source import MAX_FILE_BYTES, loads

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock (SECURITY.md)
    fcntl = None  # type: ignore[assignment]

SPEC_FILE = "spec.dsl"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
META_FILE = "meta.json"
LOCK_FILE = ".lock"
PENDING = ".pending-"  # .pending-<epoch>-<name>: written, not yet committed by meta.json
PROBE_BYTES = 64 * 1024

# The most of each file a run directory's reader reads (SECURITY.md lists them).
MAX_META_BYTES = 2**20
MAX_RECORDS_BYTES = 2**26  # metrics.jsonl, prototypes.json
MAX_WEIGHTS_BYTES = 2**34  # model.safetensors, best.safetensors
MAX_STATE_BYTES = 2**35  # state.pt: optimizer moments are about twice the weights
MAX_EPOCH = 10**9
MAX_JSON_DEPTH = 32  # lists and objects nested in a run's JSON files
INVALID = "E0704"
IN_USE = "E0705"


class ResumeError(RunError):
    """A checkpoint that cannot be resumed; the message says why."""

    code = INVALID


class RunDirError(RunError):
    """The output directory cannot hold the run (unwritable, full); the message names it."""


class RunInUse(RunError):
    """Another process holds the run directory's lock (E0705)."""

    code = IN_USE


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
        self._lock_fd: int | None = None
        self._made = False  # lock() created the directory: unlock() removes it if the run never started

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

    # -- one writer at a time
    def lock(self) -> None:
        """Hold the directory for this process (created if missing) until :meth:`unlock` or exit.

        RunInUse (E0705) at once, naming the holder's pid, when another process holds it;
        RunDirError when the directory cannot be created or written."""
        if fcntl is None or self._lock_fd is not None:
            return
        try:
            self._made = not os.path.isdir(self.path)
            os.makedirs(self.path, exist_ok=True)
            fd = self._take_lock()
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            raise RunDirError(f"cannot write to the output directory {self.path}: {e.strerror or e}") from None
        self._lock_fd = fd

    def _take_lock(self) -> int:
        """An open, locked descriptor of the lock file that is still the one at its path."""
        path = self.file(LOCK_FILE)
        while True:
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0), 0o644)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise RunError(f"{path} is not a regular file", INVALID, path)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise RunInUse(f"{self.path} is in use by {who} (a `dsl train` writing it); wait for it to "
                               "finish, or pass another --out", file=self.path) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder removes the file when it lets go: a lock on a removed file is no lock.
            try:
                if os.path.samestat(os.fstat(fd), os.lstat(path)):
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def unlock(self) -> None:
        """Let go of the directory; remove it if :meth:`lock` made it and nothing else was written."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            os.unlink(self.file(LOCK_FILE))
        except OSError:
            pass
        os.close(fd)
        if self._made:
            try:
                os.rmdir(self.path)  # only when empty: a run that never started leaves nothing behind
            except OSError:
                pass

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
        epoch = self.committed_epoch()
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
        from safetensors.torch import save

        # Clone: safetensors refuses tensors that share storage (tied weights, views).
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
        data = save(tensors, metadata={"epoch": str(epoch)})
        # Written by us, not by save_file (which makes a 0600 file): the mode of the rest of the run.
        atomic_write(self._pending(name, epoch), lambda tmp: _write_bytes(tmp, data))

    def save_state(self, state: dict[str, Any]) -> None:
        """Stage the optimizer/RNG state (``state["epoch"]`` stamps it) until :meth:`write_meta` commits it."""
        import torch

        epoch = int(state.get("epoch", 0))
        atomic_write(self._pending(STATE_FILE, epoch), lambda tmp: torch.save(state, tmp))

    # -- reading (every file is untrusted: regular, inside the directory, bounded, validated)
    def read_file(self, name: str, limit: int) -> bytes:
        """The bytes of the run's file ``name``; RunError (E0704) if it is not a regular file inside the
        directory of at most ``limit`` bytes. FileNotFoundError passes through."""
        path = self.file(name)
        root, real = os.path.realpath(self.path), os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:
            raise RunError(f"{path} links outside the run directory (to {real}); it is not read", INVALID, path)
        try:
            return read_bounded(real, limit, name)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise RunError(f"cannot read {path}: {e.strerror or e}", INVALID, path) from None

    def read_json(self, name: str, limit: int) -> Any:
        """The JSON document ``name``; RunError (E0704) when it is not JSON or nests past MAX_JSON_DEPTH."""
        return parse_json(self.read_file(name, limit), self.file(name))

    def read_meta(self) -> dict[str, Any]:
        meta = self.read_json(META_FILE, MAX_META_BYTES)
        if not isinstance(meta, dict):
            raise RunError(f"{self.file(META_FILE)} holds a JSON {type(meta).__name__}, not an object", INVALID,
                           self.file(META_FILE))
        return meta

    def committed_epoch(self, meta: dict[str, Any] | None = None) -> int:
        """The epoch meta.json commits (0 before the first checkpoint)."""
        meta = self.read_meta() if meta is None else meta
        return epoch_of(meta.get("epoch", 0) or 0, self.file(META_FILE))

    def read_metrics(self) -> list[dict[str, Any]]:
        try:
            data = self.read_file(METRICS_FILE, MAX_RECORDS_BYTES)
        except FileNotFoundError:
            return []
        path = self.file(METRICS_FILE)
        records = [parse_json(line, path, n) for n, line in enumerate(data.splitlines(), start=1) if line.strip()]
        for n, r in enumerate(records, start=1):
            check_record(r, n, path)
        return records

    def committed_file(self, name: str) -> str:
        """The name to read for the committed ``name``: the pending file of meta.json's epoch when a kill
        came between the commit and the move (what :meth:`recover` moves in), else ``name``."""
        try:
            pending = f"{PENDING}{self.committed_epoch()}-{name}"
        except FileNotFoundError:
            return name
        return pending if os.path.lexists(self.file(pending)) else name

    def _read_committed(self, name: str, limit: int) -> tuple[bytes, str]:
        chosen = self.committed_file(name)
        try:
            return self.read_file(chosen, limit), self.file(chosen)
        except FileNotFoundError:
            if chosen == name:
                raise
            return self.read_file(name, limit), self.file(name)  # a writer moved it in meanwhile

    def load_weights(self, name: str = MODEL_FILE) -> tuple[dict[str, Any], int | None]:
        """The committed weights ``name`` and the epoch they are stamped with."""
        from safetensors.torch import load

        data, path = self._read_committed(name, MAX_WEIGHTS_BYTES)
        try:
            header_size = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_size]) if 8 + header_size <= len(data) else None
            tensors = load(data)
        except Exception as e:  # safetensors raises its own error types, all meaning "not a weights file"
            raise RunError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:200]})",
                           INVALID, path) from None
        if isinstance(header, dict):  # in the file's order, as safetensors.load_file gives them
            tensors = dict(sorted(tensors.items(), key=lambda kv: _offset(header, kv[0])))
        metadata = header.get("__metadata__") if isinstance(header, dict) else None
        stamp = metadata.get("epoch") if isinstance(metadata, dict) else None
        epoch = epoch_of(stamp, path) if stamp is not None else None
        return tensors, epoch

    def load_state(self) -> dict[str, Any]:
        """The committed optimizer/RNG state: only tensors and plain containers are unpickled."""
        import pickle
        import re
        import warnings

        import torch

        data, path = self._read_committed(STATE_FILE, MAX_STATE_BYTES)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as e:
            # torch's message advises weights_only=False, i.e. running the file's code: never pass that on.
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            what = f" (it names {found.group(1)})" if found else ""
            raise RunError(f"refused to load {path}: it holds Python objects, not only tensors{what}", INVALID,
                           path) from None
        except Exception as e:  # a truncated or foreign file: torch raises many kinds
            raise RunError(f"{path} is not a readable torch file ({type(e).__name__})", INVALID, path) from None
        if not isinstance(state, dict):
            raise RunError(f"{path} holds a {type(state).__name__}, not a state dict", INVALID, path)
        state["epoch"] = epoch_of(state.get("epoch"), path)
        return state


def run_settings(meta: dict[str, Any], path: str) -> dict[str, Any]:
    """The overrides, dims and seed meta.json records, type-checked (a reader applies them again)."""
    overrides, dims, seed = meta.get("overrides") or {}, meta.get("dims") or {}, meta.get("seed")
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise RunError(f"{path}: `overrides` is not an object of param values", INVALID, path)
    if not isinstance(dims, dict) or not all(isinstance(k, str) and type(v) is int for k, v in dims.items()):
        raise RunError(f"{path}: `dims` is not an object of integer sizes", INVALID, path)
    if seed is not None and type(seed) is not int:
        raise RunError(f"{path}: `seed` is not an integer", INVALID, path)
    return {"overrides": overrides, "dims": dims, "seed": seed}


def run_spec(run: RunDir, meta: dict[str, Any] | None = None) -> Any:
    """The spec a run was trained from, as the run directory keeps it (``spec.dsl``), read like any
    of its files: a path that meta.json names is never opened. Its relative data paths resolve
    against the folder of the spec it was trained from (``meta``'s ``spec_file``), as they did in
    training; that folder is all meta.json contributes."""
    path = run.file(SPEC_FILE)
    try:
        text = run.read_file(SPEC_FILE, MAX_FILE_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise RunError(f"{run.path} keeps no {SPEC_FILE}: give the spec it was trained from", INVALID,
                       path) from None
    except UnicodeDecodeError:
        raise RunError(f"{path} is not UTF-8 text", INVALID, path) from None
    try:
        spec = loads(text, "dsl", file=path)
    except SpecError as e:
        e.sources.setdefault(path, text)
        raise
    if spec.uses:  # they would be read from wherever the copy says
        raise RunError(f"{path} uses other files (`use \"{spec.uses[0].path}\"`), which a run directory's "
                       "spec may not name: give the spec it was trained from", INVALID, path)
    trained_in = (meta or {}).get("spec_file")
    folder = os.path.dirname(trained_in) if isinstance(trained_in, str) and os.path.isabs(trained_in) else ""
    if folder and os.path.isdir(folder):
        # Only the folder: the spec's file name is what relative data paths resolve against; the name
        # given here names nothing, so no file of that folder is read to show a diagnostic.
        spec = spec.model_copy(update={"file": os.path.join(folder, f"<the {SPEC_FILE} of a run>")})
    return spec


def parse_json(data: bytes | str, path: str, line: int = 0) -> Any:
    """A JSON document of a run directory; RunError (E0704) when it is not JSON or nests too deeply."""
    where = f" (line {line})" if line else ""
    try:
        doc = json.loads(data)
    except RecursionError:
        doc = None
    except ValueError as e:  # JSONDecodeError, bad UTF-8
        raise RunError(f"{path}{where} is not valid JSON ({str(e)[:120]})", INVALID, path) from None
    else:
        if _depth(doc) <= MAX_JSON_DEPTH:
            return doc
    raise RunError(f"{path}{where} nests deeper than {MAX_JSON_DEPTH} levels: it is not a run's", INVALID, path)


def _depth(doc: Any) -> int:
    """How deeply lists and objects nest in a JSON document (without recursion)."""
    deepest, stack = 0, [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_JSON_DEPTH:
                break
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def epoch_of(value: Any, path: str) -> int:
    """An epoch number read from a run's file: an integer from 0 up."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EPOCH:
        raise RunError(f"{path} records epoch {str(value)[:40]!s}; an epoch is an integer from 0 up", INVALID, path)
    return value


SPLITS = ("train", "val", "test", "graph")  # a record's entries of loss and metric values


def check_record(r: Any, n: int, path: str) -> None:
    """One record of metrics.jsonl as the trainer and its hooks write what readers use: an integer
    epoch, numbers for each split, expert usage and pruning in their shapes; RunError (E0704) if not."""
    problem = None
    if not isinstance(r, dict):
        problem = f"is a JSON {type(r).__name__}, not an object"
    elif type(r.get("epoch", 0)) is not int:
        problem = "has no integer `epoch`"
    elif any(k in r and not (isinstance(r[k], dict) and all(map(_number, r[k].values()))) for k in SPLITS):
        problem = "has a split holding something other than numbers"
    elif not isinstance(r.get("experts") or {}, dict) or not all(map(_usage_ok, (r.get("experts") or {}).values())):
        problem = "has `experts` that are not expert usage"
    elif r.get("pruning") and not _pruning_ok(r["pruning"]):
        problem = "has `pruning` that is not a sparsity record"
    if problem is not None:
        raise RunError(f"{path}: record {n} {problem}, not what `dsl train` writes", INVALID, path)


def _holder_pid(fd: int, wait: float = 0.2) -> str:
    """The pid the lock's holder wrote, "" when it wrote none. The holder writes it right after
    taking the lock: a contender that comes in between waits a moment for the whole line."""
    deadline = time.monotonic() + wait
    while True:
        raw = os.pread(fd, 32, 0)
        if raw.endswith(b"\n") and raw.strip().isdigit():
            return raw.strip().decode("ascii")
        if time.monotonic() >= deadline:
            return ""
        time.sleep(0.002)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numbers(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) >= n and all(map(_number, v[:n]))


def _usage_ok(u: Any) -> bool:
    """One router's entry as :mod:`dsl.training.hooks.expert_usage` writes it."""
    if not isinstance(u, dict) or type(u.get("experts")) is not int or not 1 <= u["experts"] <= 100_000:
        return False
    n = u["experts"]
    return (_numbers(u.get("load"), n) and _numbers(u.get("importance"), n)
            and all(_number(u.get(k)) for k in ("entropy", "entropy_max", "unused", "tokens", "k"))
            and (u.get("dropped") is None or _number(u["dropped"])) and isinstance(u.get("kind"), str))


def _pruning_ok(p: Any) -> bool:
    return (isinstance(p, dict) and isinstance(p.get("layers"), dict) and all(map(_number, p["layers"].values()))
            and all(_number(p.get(k)) for k in ("sparsity", "weights", "nonzero")))


def check_state(state: Any, path: str) -> dict[str, Any]:
    """The state a checkpoint must hold to resume: what :meth:`Trainer.state` writes, typed."""
    import torch

    problem = None
    if not isinstance(state.get("optimizer"), dict):
        problem = "has no optimizer state"
    elif not isinstance(state.get("rng"), torch.Tensor) or state["rng"].dtype != torch.uint8:
        problem = "has no random-number generator state"
    elif not isinstance(state.get("scheduler", {}), dict) or not isinstance(state.get("best") or {}, dict):
        problem = "has a scheduler or best-epoch entry of the wrong type"
    elif not isinstance(state.get("hooks") or {}, dict):
        problem = "has hook state of the wrong type"
    elif state.get("best") and not (_number(state["best"].get("value")) and type(state["best"].get("epoch")) is int
                                    and isinstance(state["best"].get("metric"), str)):
        problem = "has a best epoch of the wrong shape"
    elif type(state.get("bad_epochs", 0)) is not int or type(state.get("stopped", False)) is not bool:
        problem = "has an early-stop count of the wrong type"
    elif state.get("watched") is not None and not _number(state["watched"]):
        problem = "has an early-stop value of the wrong type"
    if problem is not None:
        raise RunError(f"{path} {problem}: it is not a dsl checkpoint", INVALID, path)
    return state


def _offset(header: dict[str, Any], key: str) -> int:
    entry = header.get(key)
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    return int(offsets[0]) if isinstance(offsets, list) and offsets and isinstance(offsets[0], int) else 0


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _num(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
