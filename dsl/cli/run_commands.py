"""``dsl train``, ``dsl eval`` and ``dsl predict``: argparse namespaces in, exit codes out.

Exit codes: 0 success, 1 spec or run problems (diagnostics or a clear message),
2 usage errors. No traceback reaches the user unless ``--debug``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from dsl.building.guards import InputError
from dsl.checking.train import data_dims, train_config
from dsl.checking.train_config import TrainConfig
from dsl.checking.train_exprs import param_values
from dsl.language.diagnostics import SpecError
from dsl.training.rundir import (
    MODEL_FILE,
    ResumeError,
    RunDir,
    RunDirError,
    default_dir,
    spec_hash,
    spec_text,
    versions,
)


class RunProblem(Exception):
    """A problem with the run (not the spec): printed as one line, exit 1."""


@dataclass
class Prepared:
    spec: Any
    cfg: TrainConfig
    overrides: dict[str, Any]
    dims: dict[str, int]
    text: str
    hash: str


def _usage_error() -> type[Exception]:
    from dsl.cli.main import UsageError

    return UsageError


def _parse(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, int]]:
    from dsl.cli.main import parse_dims, parse_overrides

    return parse_overrides(getattr(args, "set", None) or []), parse_dims(getattr(args, "dim", None) or [])


def _spec_file(args: argparse.Namespace) -> str:
    f = args.file
    if isinstance(f, (list, tuple)):
        if len(f) != 1:
            raise _usage_error()("give exactly one spec file")
        f = f[0]
    return f


def prepare(args: argparse.Namespace, epochs: int | None = None) -> Prepared:
    """Load and check the spec; resolve the train section; bind dims from the data."""
    import dsl

    overrides, user_dims = _parse(args)
    spec = dsl.load(_spec_file(args))
    if spec.train is None:
        raise RunProblem(f"{spec.file} has no `train` section")
    cfg = train_config(spec, overrides, {"epochs": epochs, "seed": getattr(args, "seed", None)})
    dims = {**data_dims(spec, overrides), **user_dims}
    max_params = getattr(args, "max_params", None)
    errors = [d for d in dsl.check(spec, dims, max_params=max_params, **overrides) if d.severity == "error"]
    if errors:
        raise SpecError(errors)
    text = spec_text(spec)
    return Prepared(spec, cfg, overrides, dims, text, spec_hash(text, overrides, dims))


def _report(err: Exception, args: argparse.Namespace) -> int:
    if getattr(args, "debug", False):
        raise err
    if isinstance(err, SpecError):
        from dsl.cli.main import emit_diagnostics

        emit_diagnostics(err.diagnostics, getattr(args, "json", False), err.sources)
        return 1
    if isinstance(err, _usage_error()):
        print(f"dsl: error: {err}", file=sys.stderr)
        return 2
    if isinstance(err, (RunProblem, ResumeError, RunDirError, InputError)) or _stopped(err):
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"error: {type(err).__name__}: {err}\n  (run again with --debug for the traceback)", file=sys.stderr)
    return 1


def _stopped(err: Exception) -> bool:
    """A NaN/inf stop of the trainer, tested without importing the trainer (and torch) for it."""
    trainer = sys.modules.get("dsl.training.trainer")
    return trainer is not None and isinstance(err, trainer.NonFiniteLoss)


def _guarded(fn: Any, args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure becomes a message and an exit code
        return _report(err, args)


# --------------------------------------------------------------------------- train


def _load_data(cfg: TrainConfig) -> Any:
    """The data set; a bad data file is a diagnostic (E0703), not a traceback."""
    from dsl.data.loaders import load_data

    return load_data(cfg)


def cmd_train(args: argparse.Namespace) -> int:
    nproc = int(getattr(args, "nproc", 1) or 1)
    if nproc > 1 and "RANK" not in os.environ:
        return _guarded(_spawn, args)
    return _guarded(_train, args)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _latest_run(model_name: str) -> str | None:
    runs = sorted(glob.glob(os.path.join("runs", f"{model_name}-*")), key=os.path.getmtime)
    return runs[-1] if runs else None


def _run_dir(args: argparse.Namespace, p: Prepared) -> tuple[RunDir, bool]:
    name = p.spec.model.name if p.spec.model is not None else "model"
    out = getattr(args, "out", None)
    if getattr(args, "resume", False):
        path = out or _latest_run(name)
        if path is None or not RunDir(path).exists():
            raise RunProblem(f"--resume: no checkpoint in {path or 'runs/' + name + '-*'}")
        RunDir(path).probe()
        RunDir(path).recover()  # finish or drop a checkpoint write that a kill interrupted
        meta = RunDir(path).read_meta()
        if meta.get("spec_hash") != p.hash:
            raise ResumeError(
                f"refusing to resume {path}: the spec hash differs (checkpoint {str(meta.get('spec_hash'))[:12]}, "
                f"now {p.hash[:12]}); the spec, its --set overrides or --dim sizes changed since that run. "
                "Start a new run with a different --out"
            )
        return RunDir(path), True
    path = out or default_dir(name)
    if RunDir(path).exists():
        raise RunProblem(f"{path} already holds a run: pass --resume to continue it, or another --out")
    RunDir(path).probe()  # an unwritable or full output directory fails here, before any training
    return RunDir(path), False


def _dist_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _train(args: argparse.Namespace) -> int:
    import torch

    import dsl
    from dsl.training.trainer import Trainer, final_table

    rank, world = _dist_env()
    device = getattr(args, "device", "cpu") or "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RunProblem("--device cuda: no CUDA device is available")
    if world > 1:
        _init_distributed(rank, world, device)
    try:
        p = prepare(args, getattr(args, "epochs", None))
        run, resuming = _run_dir(args, p) if rank == 0 else (None, bool(getattr(args, "resume", False)))
        if world > 1:
            run_path = _broadcast_path(run.path if run else "")
            run = run if rank == 0 else RunDir(run_path)
        if device == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        _seed_everything(p.cfg.seed)
        model = dsl.compile(p.spec, p.dims, return_dict=True, with_aux=True,
                            max_params=getattr(args, "max_params", None),
                            guards=not getattr(args, "no_guards", False), **p.overrides)
        if not any(w.requires_grad for w in model.parameters()):
            raise RunProblem(f"model `{meta_name(p)}` has no trainable parameters: there is nothing to train")
        if run is not None and rank == 0:
            run.check_space(_checkpoint_bytes(model))
        data = _load_data(p.cfg)
        meta = {
            "model": p.spec.model.name if p.spec.model else None,
            "spec_file": os.path.abspath(p.spec.file),
            "spec_hash": p.hash,
            "overrides": p.overrides,
            "dims": p.dims,
            "seed": p.cfg.seed,
            "epochs": p.cfg.epochs,
            "epoch": 0,
            "data": f"{p.cfg.source.name}({_kw(p.cfg.source_params)})",
            "versions": versions(),
            "world_size": world,
            "device": device,
            "run_dir": run.path if run else "",
        }
        trainer = Trainer(
            model, p.cfg, data, param_values(p.spec, p.overrides), run=run if rank == 0 else None, meta=meta,
            device=device if device == "cpu" else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}",
            quiet=bool(getattr(args, "quiet", False)), rank=rank, world=world,
            torch_compile=bool(getattr(args, "compile", False)),
        )
        if resuming:
            trainer.resume()
        elif rank == 0 and run is not None:
            run.start(p.text, meta)
        history = trainer.fit()
        if rank == 0:
            _finish(args, trainer, history, run, final_table)
        return 0
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _checkpoint_bytes(model: Any) -> int:
    """Room a checkpoint needs: weights, best weights and optimizer moments (x2 while a commit is pending)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 8 * weights + 2**20


def _finish(args: argparse.Namespace, trainer: Any, history: list, run: RunDir | None, final_table: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"run_dir": run.path if run else None, "last": history[-1] if history else None,
                          "best": trainer.best}, default=str))
        return
    from rich.console import Console

    console = Console(file=sys.stdout)
    console.print(final_table(history, trainer.data.eval_splits, trainer.best))
    if not getattr(args, "quiet", False):
        # Hooks with something to show at the end (expert usage, final sparsity) define summary().
        for hook in trainer.hooks:
            for renderable in hook.summary(trainer):
                console.print(renderable)
    if run is not None:
        console.print(f"run directory: {run.path}")


def meta_name(p: Prepared) -> str:
    return p.spec.model.name if p.spec.model else "?"


def _kw(params: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.model_dump(exclude_defaults=True).items() if k != "base_dir")


# --------------------------------------------------------------------------- distributed


def _init_distributed(rank: int, world: int, device: str) -> None:
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)


def _broadcast_path(path: str) -> str:
    import torch.distributed as dist

    box = [path]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, codes: Any) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    codes[rank] = _guarded(_train, args)


def _spawn(args: argparse.Namespace) -> int:
    """``--nproc n``: n processes on this machine, like torchrun would start."""
    import torch.multiprocessing as mp

    world = int(args.nproc)
    if getattr(args, "resume", False) is False and getattr(args, "out", None) is None:
        # Every rank must agree on the run directory before rank 0 creates it.
        import dsl

        spec = dsl.load(_spec_file(args))
        args.out = default_dir(spec.model.name if spec.model else "model")
    codes = mp.get_context("spawn").Manager().dict()
    mp.spawn(_worker, args=(world, _free_port(), args, codes), nprocs=world, join=True)
    return max(codes.values()) if codes else 1


# --------------------------------------------------------------------------- eval / predict


def _from_checkpoint(args: argparse.Namespace) -> tuple[Prepared, Any, RunDir]:
    """The spec (with the run's overrides and dims unless given again) and the trained model."""
    import torch

    import dsl

    run = RunDir(args.ckpt)
    if not os.path.exists(run.file(MODEL_FILE)):
        raise RunProblem(f"{args.ckpt}: no {MODEL_FILE} (not a run directory?)")
    meta = run.read_meta() if run.exists() else {}
    overrides, dims = _parse(args)
    args_set = {**meta.get("overrides", {}), **overrides}
    spec = dsl.load(_spec_file(args))
    # the run's seed fixes its data split, so evaluation must use it too
    cfg = train_config(spec, args_set, {"seed": meta.get("seed")})
    all_dims = {**data_dims(spec, args_set), **meta.get("dims", {}), **dims}
    text = spec_text(spec)
    p = Prepared(spec, cfg, args_set, all_dims, text, spec_hash(text, args_set, all_dims))
    torch.manual_seed(cfg.seed)
    model = dsl.compile(spec, all_dims, return_dict=True, with_aux=False,
                        max_params=getattr(args, "max_params", None), **args_set)
    weights, _ = run.load_weights()
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise RunProblem(f"the checkpoint in {args.ckpt} does not fit this spec: {str(exc).splitlines()[0]}") from None
    return p, model, run


def cmd_eval(args: argparse.Namespace) -> int:
    return _guarded(_eval, args)


def _eval(args: argparse.Namespace) -> int:
    from dsl.training.trainer import Trainer

    p, model, run = _from_checkpoint(args)
    data = _load_data(p.cfg)
    device = getattr(args, "device", "cpu") or "cpu"
    trainer = Trainer(model, p.cfg, data, param_values(p.spec, p.overrides), device=device, verbose=False)
    splits = ("test",) if "test" in data.eval_splits else data.eval_splits
    results = {s: trainer.evaluate(s) for s in splits}
    if getattr(args, "json", False):
        print(json.dumps(results))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{p.spec.model.name if p.spec.model else 'model'} · {run.path}")
    table.add_column("split")
    keys = list(next(iter(results.values())))
    for k in keys:
        table.add_column(k, justify="right")
    for s, r in results.items():
        table.add_row(s, *[f"{r[k]:.4f}" for k in keys])
    Console(file=sys.stdout).print(table)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    return _guarded(_predict, args)


def _predict(args: argparse.Namespace) -> int:
    import torch

    from dsl.training.trainer import input_names

    p, model, _ = _from_checkpoint(args)
    tensors = _predict_inputs(args, p)
    names = input_names(model, tensors)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise RunProblem(f"{args.data} lacks the model input(s) {', '.join(missing)} (it has: {', '.join(tensors)})")
    model.eval()
    device = torch.device(getattr(args, "device", "cpu") or "cpu")
    model.to(device)
    with torch.no_grad():
        out = model(**{n: tensors[n].to(device) for n in names})
    if not isinstance(out, dict):
        out = {next(iter(getattr(model, "dsl_outputs", {"output": None}))): out}
    _write_predictions(args.out, {k: v.detach().cpu() for k, v in out.items()})
    print(f"wrote {', '.join(f'{k} {tuple(v.shape)}' for k, v in out.items())} to {args.out}")
    return 0


def _predict_inputs(args: argparse.Namespace, p: Prepared) -> dict[str, Any]:
    """The data file's arrays (all rows, scaled as in training), or the spec's test split."""
    path = getattr(args, "data", None)
    if path:
        if not os.path.exists(path):
            raise RunProblem(f"data file not found: {path}")
        from dsl.data.files import DataError, _read_tensors
        from dsl.data.sources import FileParams
        from dsl.language.diagnostics import Diagnostic, Span

        try:
            tensors = _read_tensors(path, FileParams(path=path))
        except DataError as exc:
            raise SpecError([Diagnostic(exc.code, exc.message, exc.span or Span(file=path))]) from None
        return _predict_scaled(tensors, p)
    import torch

    data = _load_data(p.cfg)
    split = "test" if "test" in data.eval_splits else data.eval_splits[0]
    batches = list(data.batches(split))
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]} if len(batches) > 1 else batches[0]


def _predict_scaled(tensors: dict[str, Any], p: Prepared) -> dict[str, Any]:
    """Standardise a data file's float fields as training did, when the spec's source
    standardises (``digits()``, ``file(..., standardize=true)``): with the training
    split's mean and std, recomputed from the source and the run's seed."""
    if not getattr(p.cfg.source_params, "standardize", False):
        return tensors
    from dsl.data.base import apply_scaling

    data = _load_data(p.cfg)
    try:
        return apply_scaling(tensors, getattr(data, "scaling", {}))
    except ValueError as exc:
        raise RunProblem(f"cannot standardise the data file as in training: {exc}") from None


def _write_predictions(path: str, out: dict[str, Any]) -> None:
    import numpy as np
    import torch

    from dsl.training.rundir import atomic_write

    if path.endswith(".npz"):
        def write_npz(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
                np.savez(fh, **{k: v.numpy() for k, v in out.items()})

        atomic_write(path, write_npz)
    elif path.endswith(".csv"):
        import csv

        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                cols = [(k, v.reshape(v.shape[0], -1)) for k, v in out.items()]
                w.writerow([f"{k}_{j}" if t.shape[1] > 1 else k for k, t in cols for j in range(t.shape[1])])
                for i in range(cols[0][1].shape[0]):
                    w.writerow([float(x) for _, t in cols for x in t[i]])

        atomic_write(path, write)
    else:
        atomic_write(path, lambda tmp: torch.save(out, tmp))
