"""``dsl train``, ``dsl eval`` and ``dsl predict``: argparse namespaces in, exit codes out.

The work is :mod:`dsl.training.session`'s; this module parses the arguments and
prints. Exit codes: 0 success, 1 spec or run problems (diagnostics or a clear
message), 2 usage errors. No traceback reaches the user unless ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

from dsl.cli.main import (
    UsageError,
    emit_diagnostics,
    parse_assignments,
    parse_dims,
    parse_overrides,
)
from dsl.language.errors import DslError, RunError, SpecError
from dsl.training.rundir import default_dir
from dsl.training.session import (
    Options,
    Prepared,
    init_distributed,
    load_data,
    load_trained,
    prepare,
)


def _spec_file(args: argparse.Namespace) -> str:
    f = args.file
    if isinstance(f, (list, tuple)):
        if len(f) != 1:
            raise UsageError("give exactly one spec file")
        f = f[0]
    return f


def _prepare(args: argparse.Namespace) -> Prepared:
    overrides, dims = parse_overrides(args.set or []), parse_dims(args.dim or [])
    train_overrides = {"epochs": getattr(args, "epochs", None), "seed": getattr(args, "seed", None)}
    return prepare(_spec_file(args), overrides, dims, train_overrides, getattr(args, "max_params", None))


def _report(err: Exception, args: argparse.Namespace) -> int:
    if getattr(args, "debug", False):
        raise err
    if isinstance(err, SpecError):
        emit_diagnostics(err.diagnostics, getattr(args, "json", False), err.sources)
        return 1
    if isinstance(err, UsageError):
        print(f"dsl: error: {err}", file=sys.stderr)
        return 2
    if isinstance(err, DslError):
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"error: {type(err).__name__}: {err}\n  (run again with --debug for the traceback)", file=sys.stderr)
    return 1


def _guarded(fn: Any, args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure becomes a message and an exit code
        return _report(err, args)


# --------------------------------------------------------------------------- train


def cmd_train(args: argparse.Namespace) -> int:
    from dsl.training.sweep import is_sweep

    nproc = int(getattr(args, "nproc", 1) or 1)
    if is_sweep(list(parse_assignments(args.set or [], "--set").items())):
        from dsl.cli.sweep import run_sweep

        return _guarded(run_sweep, args)
    if nproc > 1 and "RANK" not in os.environ:
        return _guarded(_spawn, args)
    return _guarded(_train, args)


def _options(args: argparse.Namespace) -> Options:
    return Options(out=getattr(args, "out", None), resume=bool(getattr(args, "resume", False)),
                   device=getattr(args, "device", "cpu") or "cpu", quiet=bool(getattr(args, "quiet", False)),
                   guards=not getattr(args, "no_guards", False), torch_compile=bool(getattr(args, "compile", False)),
                   max_params=getattr(args, "max_params", None), loggers=list(getattr(args, "logger", None) or []))


def _train(args: argparse.Namespace) -> int:
    from dsl.training import session

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    opts = _options(args)
    if world > 1:
        init_distributed(rank, world, opts.device)
    try:
        trainer = session.train(_prepare(args), opts, rank, world)
        if rank == 0:
            _finish(args, trainer)
        return 0
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _finish(args: argparse.Namespace, trainer: Any) -> None:
    from dsl.training.trainer import final_table

    run = trainer.run
    if getattr(args, "json", False):
        print(json.dumps({"run_dir": run.path if run else None, "last": trainer.history[-1] if trainer.history else None,
                          "best": trainer.best, "test": trainer.test}, default=str))
        return
    from rich.console import Console

    console = Console(file=sys.stdout)
    console.print(final_table(trainer.history, trainer.data.eval_splits, trainer.best, trainer.test))
    console.print(selection_note(trainer), highlight=False)
    if not getattr(args, "quiet", False):
        # Hooks with something to show at the end (expert usage, final sparsity) define summary().
        for hook in trainer.hooks:
            for renderable in hook.summary(trainer):
                console.print(renderable)
    if run is not None:
        console.print(f"run directory: {run.path}")


def selection_note(trainer: Any) -> str:
    """Which weights the test split saw, in one line."""
    best = trainer.best
    if best and trainer.test:
        return (f"test: once, on epoch {best['epoch']}'s weights (best val {best['metric']} "
                f"{best['value']:.4f})")
    if trainer.test:
        return "test: once, on the last epoch's weights (this data has no validation split)"
    if trainer.val_split is None:
        return "this data has no validation split and no test split"
    return f"best val {best['metric']} at epoch {best['epoch']}" if best else ""


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

    from dsl.language.source import load

    world = int(args.nproc)
    if not getattr(args, "resume", False) and getattr(args, "out", None) is None:
        # Every rank must agree on the run directory before rank 0 creates it.
        spec = load(_spec_file(args))
        args.out = default_dir(spec.model.name if spec.model else "model")
    codes = mp.get_context("spawn").Manager().dict()
    mp.spawn(_worker, args=(world, _free_port(), args, codes), nprocs=world, join=True)
    return max(codes.values()) if codes else 1


# --------------------------------------------------------------------------- eval / predict


def _trained(args: argparse.Namespace) -> tuple[Prepared, Any, Any, Any]:
    spec = _spec_file(args) if getattr(args, "file", None) else None
    return load_trained(args.ckpt, spec, parse_overrides(args.set or []), parse_dims(args.dim or []),
                        getattr(args, "max_params", None))


def cmd_eval(args: argparse.Namespace) -> int:
    return _guarded(_eval, args)


def _eval(args: argparse.Namespace) -> int:
    from dsl.training.trainer import Trainer

    p, model, step, run = _trained(args)
    data = load_data(p.cfg)
    assert p.analysis.objective is not None
    trainer = Trainer(model, step, p.cfg, p.analysis.objective.metrics, data,
                      device=getattr(args, "device", "cpu") or "cpu", verbose=False)
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

    p, model, _, _ = _trained(args)
    tensors = _predict_inputs(args, p)
    names = input_names(model)
    missing = [n for n in names if n not in tensors]
    if missing:
        raise RunError(f"{args.data} lacks the model input(s) {', '.join(missing)} (it has: {', '.join(tensors)})")
    model.eval()
    device = torch.device(getattr(args, "device", "cpu") or "cpu")
    model.to(device)
    declared = list(getattr(model, "dsl_outputs", {}))
    with torch.no_grad():
        out = model(**{n: tensors[n].to(device) for n in names})
    out = {k: v for k, v in out.items() if k in declared}  # the spec's outputs, not what training reads
    _write_predictions(args.out, {k: v.detach().cpu() for k, v in out.items()})
    print(f"wrote {', '.join(f'{k} {tuple(v.shape)}' for k, v in out.items())} to {args.out}")
    return 0


def _predict_inputs(args: argparse.Namespace, p: Prepared) -> dict[str, Any]:
    """The data file's arrays (all rows, scaled as in training), or the spec's test split."""
    path = getattr(args, "data", None)
    if path:
        if not os.path.exists(path):
            raise RunError(f"data file not found: {path}")
        from dsl.data.files import DataError, _read_tensors
        from dsl.data.sources import FileParams
        from dsl.language.diagnostics import Diagnostic, Span

        try:
            tensors = _read_tensors(path, FileParams(path=path))
        except DataError as exc:
            raise SpecError([Diagnostic(exc.code, exc.message, exc.span or Span(file=path))]) from None
        return _predict_scaled(tensors, p)
    import torch

    data = load_data(p.cfg)
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

    data = load_data(p.cfg)
    try:
        return apply_scaling(tensors, getattr(data, "scaling", {}))
    except ValueError as exc:
        raise RunError(f"cannot standardise the data file as in training: {exc}") from None


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
