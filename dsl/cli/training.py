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
    emit_error,
    parse_assignments,
    parse_dims,
    parse_overrides,
)
from dsl.language.errors import DslError, SpecError
from dsl.training.labels import check_labels
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
        emit_error("dsl", err, getattr(args, "json", False))
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
    refused = _guarded(_train_keys_given_once, args)
    if refused:
        return refused
    if is_sweep(list(parse_assignments(args.set or [], "--set", dotted=True).items())):
        from dsl.cli.sweep import run_sweep

        return _guarded(run_sweep, args)
    if nproc > 1 and "RANK" not in os.environ:
        return _guarded(_spawn, args)
    return _guarded(_train, args)


def _train_keys_given_once(args: argparse.Namespace) -> int:
    """``--epochs 3 --set epochs=5`` would train one and record the other: refused."""
    keys = parse_assignments(args.set or [], "--set", dotted=True)
    for flag in ("epochs", "seed"):
        if getattr(args, flag, None) is not None and flag in keys:
            raise UsageError(f"--{flag} and --set {flag}={keys[flag]} both set `{flag}`: give one of them")
    return 0


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
        if world > 1:  # no rank tears its process group down while another still uses it
            import torch.distributed as dist

            dist.barrier()
        return 0
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _finish(args: argparse.Namespace, trainer: Any) -> None:
    from dsl.training.runs import show_summary

    run = trainer.run
    if getattr(args, "json", False):
        print(json.dumps({"run_dir": run.path if run else None, "last": trainer.history[-1] if trainer.history else None,
                          "best": trainer.best, "test": trainer.test}, default=str))
        return
    # Hooks with something to show at the end (expert usage, final sparsity) define summary().
    show_summary(trainer, hooks=not getattr(args, "quiet", False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, launcher: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    _die_with(launcher)
    code = _guarded(_train, args)
    if code:
        sys.exit(code)  # the launcher sees it, stops the other ranks and exits with it


def _die_with(launcher: int) -> None:
    """End this rank when its launcher ends, however it ends (``kill -9`` included): an orphaned rank
    would wait on the others forever, holding the run directory. The run directory is crash-safe."""
    import signal
    import threading
    import time

    try:  # Linux: the kernel sends the signal the moment the launcher dies
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # elsewhere, and should the launcher be gone already: poll
        while os.getppid() == launcher:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="dsl-launcher-watch", daemon=True).start()


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _spawn(args: argparse.Namespace) -> int:
    """``--nproc n``: n processes on this machine, like torchrun would start. SIGTERM or an interrupt
    stops every rank (exit 128 + signal); a failing rank stops the others and gives its exit code."""
    import signal

    import torch.multiprocessing as mp

    from dsl.language.source import load

    world = int(args.nproc)
    if not getattr(args, "resume", False) and getattr(args, "out", None) is None:
        # Every rank must agree on the run directory before rank 0 creates it.
        spec = load(_spec_file(args))
        args.out = default_dir(spec.model.name if spec.model else "model")

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped(signum)

    old = signal.signal(signal.SIGTERM, stop)
    ctx = None
    try:
        ctx = mp.start_processes(_worker, args=(world, _free_port(), args, os.getpid()), nprocs=world,
                                 join=False, start_method="spawn")
        while not ctx.join():
            pass
        return 0
    except mp.ProcessExitedException as e:  # the rank printed its own message
        return e.exit_code if e.exit_code > 0 else 128 - e.exit_code
    except (_Stopped, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, _Stopped) else signal.SIGINT
        _end_ranks(ctx)
        print(f"stopped by {signal.Signals(signum).name}: the run directory keeps its last checkpoint "
              "(--resume continues it)", file=sys.stderr)
        return 128 + int(signum)
    finally:
        signal.signal(signal.SIGTERM, old)


def _end_ranks(ctx: Any) -> None:
    """Terminate the ranks that still run, then kill those that do not go within a few seconds."""
    procs = list(ctx.processes) if ctx is not None else []
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join()


# --------------------------------------------------------------------------- eval / predict


def _run_and_spec(args: argparse.Namespace) -> tuple[str, str | None]:
    """(run, spec or None): ``dsl eval RUN [--spec FILE]``, or the older ``dsl eval FILE --ckpt RUN``."""
    ckpt, spec = getattr(args, "ckpt", None), getattr(args, "spec", None)
    target = _spec_file(args) if getattr(args, "file", None) else None
    command = getattr(args, "command", None) or "eval"
    if ckpt:
        return ckpt, spec or target
    if target is None:
        raise UsageError(f"give the run directory: dsl {command} RUN")
    if target.endswith((".dsl", ".yaml", ".yml")) and os.path.isfile(target):
        raise UsageError(f"{target} is a spec: give the run directory (dsl {command} RUN --spec {target}) "
                         "or the run with --ckpt")
    return target, spec


def cmd_eval(args: argparse.Namespace) -> int:
    return _guarded(_eval, args)


def _eval(args: argparse.Namespace) -> int:
    from dsl.training.runs import locate
    from dsl.training.trainer import Trainer

    path, spec = _run_and_spec(args)
    run, weights_file = locate(path, bool(getattr(args, "best", False)))
    p, model, step, run = load_trained(run.path, spec, parse_overrides(args.set or []), parse_dims(args.dim or []),
                                       getattr(args, "max_params", None), weights_file)
    data = load_data(p.cfg)
    check_labels(p.analysis, data)
    assert p.analysis.objective is not None
    trainer = Trainer(model, step, p.cfg, p.analysis.objective.metrics, data,
                      device=getattr(args, "device", "cpu") or "cpu", verbose=False)
    results = {s: trainer.evaluate(s) for s in data.eval_splits}
    if getattr(args, "json", False):
        print(json.dumps(results))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=p.spec.model.name if p.spec.model else "model", caption=run.file(weights_file))
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
    from dsl.training import predict
    from dsl.training.runs import open_run

    path, spec = _run_and_spec(args)
    predict.check_out(args.out)
    opened = open_run(path, bool(getattr(args, "best", False)), spec, parse_overrides(args.set or []),
                      parse_dims(args.dim or []), getattr(args, "max_params", None))
    if getattr(args, "data", None):  # raw inputs: through the run's preprocessing
        module, batches = opened.trained(), predict.file_batches(args.data, opened)
    else:  # the test split, as its source prepared it
        module, batches = opened.model, predict.split_batches(opened)
    result = predict.predict(module, batches, getattr(args, "device", "cpu") or "cpu")
    result.named(opened.preprocessing.vocabularies.get("y"))
    for note in predict.write(args.out, result):
        print(f"note: {note}", file=sys.stderr)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in result.arrays().items())
    print(f"wrote {shapes} to {args.out}")
    return 0
