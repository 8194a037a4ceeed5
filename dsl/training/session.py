"""A training run from a spec: analyse once, build the model and its step, load the data, train.

:func:`prepare` analyses the spec (resolve and check once, the train section
included); :func:`train` runs it into a run directory, in one process or as one
rank of several; :func:`load_trained` rebuilds a run's model for ``dsl eval``
and ``dsl predict``. The command line (:mod:`dsl.cli.training`) only parses
arguments and prints.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

from dsl.checking.analysis import Analysis, analyse
from dsl.checking.train.config import TrainConfig
from dsl.language.errors import RunError, SpecError
from dsl.language.files import atomic_text
from dsl.language.ir import Spec
from dsl.language.shapes import Sym, TensorType
from dsl.language.source import load
from dsl.training.checkpoint import load_into
from dsl.training.labels import check_labels
from dsl.training.rundir import (
    META_FILE,
    MODEL_FILE,
    ResumeError,
    RunDir,
    default_dir,
    run_settings,
    run_spec,
    spec_hash,
    spec_text,
    versions,
)


@dataclass
class Prepared:
    """A spec ready to train: its one analysis, the dims it was checked with, and its identity."""

    analysis: Analysis
    overrides: dict[str, Any]
    dims: dict[str, int]
    text: str
    hash: str

    @property
    def spec(self) -> Spec:
        return self.analysis.spec

    @property
    def cfg(self) -> TrainConfig:
        assert self.analysis.config is not None
        return self.analysis.config


@dataclass
class Options:
    """How to run: where, on what, and how much to show."""

    out: str | None = None
    resume: bool = False
    device: str = "cpu"
    quiet: bool = False
    guards: bool = True
    torch_compile: bool = False
    max_params: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more entries for meta.json
    loggers: list[str] = field(default_factory=list)  # --logger, added to the train section's loggers


def prepare(spec: Spec | str, overrides: dict[str, Any] | None = None, dims: dict[str, int] | None = None,
            train_overrides: dict[str, Any] | None = None, max_params: int | None = None,
            fields: dict[str, TensorType] | None = None, sizes: dict[str, int] | None = None) -> Prepared:
    """Load and check the spec, its train section included; SpecError with every problem.

    ``fields``: the data's fields, for a source that declares none before loading (a ``.pt``
    file); with ``sizes`` (what it declares, ``N_<column>``), a trained run's record of its
    data, so that the run's model is rebuilt without reading the data again."""
    spec = load(spec) if isinstance(spec, str) else spec
    if spec.train is None:
        raise RunError(f"{spec.file} has no `train` section")
    overrides = dict(overrides or {})
    a = analyse(spec, dims, overrides, max_params, train_overrides, fields, sizes=sizes)
    if not a.ok or a.config is None:
        raise SpecError(a.errors or a.diagnostics)
    all_dims = {**a.data_dims, **dict(dims or {})}
    text = spec_text(spec)
    return Prepared(a, overrides, all_dims, text, spec_hash(text, overrides, all_dims))


def with_loaded_fields(p: Prepared, data: Any, dims: dict[str, int] | None = None) -> Prepared:
    """``p`` checked against the fields of the loaded data, when its source declared none."""
    if p.analysis.fields is not None:
        return p
    example = data.example()
    fields = {k: TensorType((Sym("B"), *v.shape[1:]) if v.dim() else (), _dtype_name(v)) for k, v in example.items()}
    return prepare(p.spec, p.overrides, dims, {"epochs": p.cfg.epochs, "seed": p.cfg.seed}, fields=fields)


def _dtype_name(t: Any) -> str:
    if t.is_floating_point():
        return "float"
    return {"torch.int64": "long", "torch.int32": "int", "torch.bool": "bool"}.get(str(t.dtype), "long")


# --------------------------------------------------------------------------- a run's record of its data

FIELDS = "fields"  # meta.json: the fields of the data a run was trained on
SIZES = "data_sizes"  # meta.json: the constants its source declared (N_<column>)
MAX_RECORDED = 1000  # fields or sizes in a record


def data_record(a: Analysis) -> dict[str, Any]:
    """What meta.json keeps of the data: its fields' types and the sizes its source declared,
    enough to rebuild the model (``dsl predict --data``, ``dsl export``) without the data."""
    if a.fields is None:
        return {}
    fields = {k: {"shape": [d if isinstance(d, int) else str(d) for d in t.shape], "dtype": t.dtype}
              for k, t in a.fields.items()}
    return {FIELDS: fields, SIZES: dict(a.data_sizes)}


def read_data_record(meta: dict[str, Any], where: str) -> tuple[dict[str, TensorType] | None, dict[str, int] | None]:
    """(fields, sizes) that meta.json records, validated (the run directory is untrusted input);
    (None, None) for a run from before they were kept."""
    if FIELDS not in meta:
        return None, None
    bad = RunError(f"{where}: meta.json's `{FIELDS}` or `{SIZES}` is not a valid record of the data", "E0704", where)
    value, sizes = meta.get(FIELDS), meta.get(SIZES)
    if not isinstance(value, dict) or len(value) > MAX_RECORDED:
        raise bad
    fields = {name: _recorded_type(name, entry) for name, entry in value.items()}
    if any(t is None for t in fields.values()) or (sizes is not None and not _recorded_sizes(sizes)):
        raise bad
    return {k: t for k, t in fields.items() if t is not None}, None if sizes is None else dict(sizes)


def _recorded_type(name: Any, entry: Any) -> TensorType | None:
    """One recorded field's type (``{"shape": ["B", 3], "dtype": "float"}``), None if malformed."""
    if not isinstance(name, str) or not name.isidentifier() or not isinstance(entry, dict):
        return None
    shape, dtype = entry.get("shape"), entry.get("dtype")
    if dtype not in ("float", "long", "int", "bool") or not isinstance(shape, list) or len(shape) > 16:
        return None
    dims: list[Any] = []
    for d in shape:
        if isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**62:
            dims.append(d)
        elif isinstance(d, str) and d.isidentifier():
            dims.append(Sym(d))
        else:
            return None
    return TensorType(tuple(dims), dtype)


def _recorded_sizes(sizes: Any) -> bool:
    return isinstance(sizes, dict) and len(sizes) <= MAX_RECORDED and all(
        isinstance(k, str) and k.isidentifier() and type(v) is int and 0 <= v < 2**62 for k, v in sizes.items())


def latest_run(model_name: str) -> str | None:
    runs = sorted(glob.glob(os.path.join("runs", f"{model_name}-*")), key=os.path.getmtime)
    return runs[-1] if runs else None


def run_dir(p: Prepared, out: str | None, resume: bool) -> tuple[RunDir, bool]:
    """The run directory and whether it resumes; RunError when it cannot be used."""
    name = p.spec.model.name if p.spec.model is not None else "model"
    path = (out or latest_run(name)) if resume else (out or default_dir(name))
    if resume and (path is None or not RunDir(path).exists()):
        raise RunError(f"--resume: no checkpoint in {path or 'runs/' + name + '-*'}", "E0702", path)
    assert path is not None
    run = RunDir(path)
    run.lock()  # one writer per directory, before anything is written (the caller unlocks)
    try:
        _check_run_dir(run, p, resume)
    except BaseException:
        run.unlock()
        raise
    return run, resume


def _check_run_dir(run: RunDir, p: Prepared, resume: bool) -> None:
    """A locked directory fit to start (a new run) or to resume (the same spec's checkpoint)."""
    if not resume:
        if run.exists():
            raise RunError(f"{run.path} already holds a run: pass --resume to continue it, or another --out", "E0706",
                           run.path)
        run.probe()  # an unwritable or full output directory fails here, before any training
        return
    run.probe()
    run.recover()  # finish or drop a checkpoint write that a kill interrupted
    meta = run.read_meta()
    if meta.get("spec_hash") != p.hash:
        raise ResumeError(
            f"refusing to resume {run.path}: the spec hash differs (checkpoint {str(meta.get('spec_hash'))[:12]}, "
            f"now {p.hash[:12]}); the spec, its --set overrides or --dim sizes changed since that run. "
            "Start a new run with a different --out", file=run.file(META_FILE)
        )


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(cfg: TrainConfig) -> Any:
    """The data set; a bad data file is a diagnostic (E0703), not a traceback."""
    from dsl.data.loaders import load_data as load

    return load(cfg)


def _checkpoint_bytes(model: Any) -> int:
    """Room a checkpoint needs: weights, best weights and optimizer moments (x2 while a commit is pending)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 8 * weights + 2**20


def _source_text(cfg: TrainConfig) -> str:
    if cfg.source is None:
        return "a Python Dataset"
    args = cfg.source_params.model_dump(exclude_defaults=True)
    return f"{cfg.source.name}({', '.join(f'{k}={v!r}' for k, v in args.items() if k != 'base_dir')})"


def train(p: Prepared, opts: Options, rank: int = 0, world: int = 1, data: Any = None) -> Any:
    """Train ``p`` as rank ``rank`` of ``world`` processes; the :class:`~dsl.training.trainer.Trainer`.

    ``data``: a loaded dataset to train on instead of the train section's source."""

    check_device(opts.device)
    run, resuming = run_dir(p, opts.out, opts.resume) if rank == 0 else (None, opts.resume)
    try:
        return _train_in(p, opts, run, resuming, rank, world, data)
    finally:
        if run is not None and rank == 0:
            run.unlock()


def _train_in(p: Prepared, opts: Options, run: RunDir | None, resuming: bool, rank: int, world: int,
              data: Any) -> Any:
    """:func:`train` once rank 0 holds the run directory."""
    import torch

    from dsl.building.model import build_for_training
    from dsl.training.trainer import Trainer

    if world > 1:  # every rank learns rank 0's run directory
        path = _broadcast_path(run.path if run is not None else "")
        run = run if rank == 0 else RunDir(path)
    if opts.device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    data = load_data(p.cfg) if data is None else data
    p = with_loaded_fields(p, data)
    check_labels(p.analysis, data)
    seed_everything(p.cfg.seed)
    model, step = build_for_training(p.analysis, guards=opts.guards)
    if not any(w.requires_grad for w in model.parameters()):
        raise RunError(f"model `{p.spec.model.name if p.spec.model else '?'}` has no trainable parameters: "
                       "there is nothing to train")
    if run is not None and rank == 0:
        run.check_space(_checkpoint_bytes(model))
    meta = {
        "model": p.spec.model.name if p.spec.model else None,
        "spec_file": os.path.abspath(p.spec.file),
        "spec_hash": p.hash,
        "overrides": p.overrides,
        "dims": p.dims,
        "seed": p.cfg.seed,
        "epochs": p.cfg.epochs,
        "epoch": 0,
        "data": _source_text(p.cfg),
        **data_record(p.analysis),
        **({"data_info": dict(data.info)} if data.info else {}),
        "versions": versions(),
        "world_size": world,
        "device": opts.device,
        "run_dir": run.path if run else "",
        **opts.extra,
    }
    device = opts.device if opts.device == "cpu" or world == 1 else f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    assert p.analysis.objective is not None
    trainer = Trainer(model, step, p.cfg, p.analysis.objective.metrics, data, run=run if rank == 0 else None,
                      meta=meta, device=device, quiet=opts.quiet, rank=rank, world=world,
                      torch_compile=opts.torch_compile, loggers=[*p.cfg.loggers, *opts.loggers])
    if resuming:
        trainer.resume()
    elif rank == 0 and run is not None:
        run.start(p.text, meta)
        save_preprocessing(run, data)
    trainer.fit()
    return trainer


def check_device(device: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:N`` naming a device that is there; RunError otherwise."""
    import torch

    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise RunError(f"--device {device}: no CUDA device is available")
    index = device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise RunError(f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s), "
                       f"cuda:0..cuda:{torch.cuda.device_count() - 1}")


def save_preprocessing(run: RunDir, data: Any) -> None:
    """``preprocess.json``: what the source did to raw inputs (``dsl predict`` and ``dsl export`` redo it)."""
    from dsl.data.preprocess import PREPROCESS_FILE, of_dataset

    atomic_text(run.file(PREPROCESS_FILE), of_dataset(data).to_json())


def init_distributed(rank: int, world: int, device: str) -> None:
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world)


def _broadcast_path(path: str) -> str:
    import torch.distributed as dist

    box = [path]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


def load_trained(run_path: str, spec: Spec | str | None = None, overrides: dict[str, Any] | None = None,
                 dims: dict[str, int] | None = None, max_params: int | None = None,
                 weights_file: str = MODEL_FILE) -> tuple[Prepared, Any, Any, RunDir]:
    """(prepared spec, trained model, its training step, run directory) of a finished run.

    The run's own overrides, dims and seed apply unless given again; the seed fixes
    the data split, so evaluation sees the same split as training."""
    import torch

    from dsl.building.model import build_for_training

    run = RunDir(run_path)
    if not os.path.lexists(run.file(weights_file)) and not os.path.lexists(run.file(run.committed_file(weights_file))):
        raise RunError(f"{run_path}: no {weights_file} (not a run directory?)", "E0702", run_path)
    meta = run.read_meta() if run.exists() else {}
    settings = run_settings(meta, run.file(META_FILE))
    if spec is None:
        spec = run_spec(run, meta)  # the run's own copy: a path meta.json names is never opened
    fields, sizes = read_data_record(meta, run.file(META_FILE))
    p = prepare(spec, {**settings["overrides"], **dict(overrides or {})},
                {**settings["dims"], **dict(dims or {})}, {"seed": settings["seed"]}, max_params, fields, sizes)
    if p.analysis.fields is None:
        p = with_loaded_fields(p, load_data(p.cfg), p.dims)
    torch.manual_seed(p.cfg.seed)
    model, step = build_for_training(p.analysis)
    weights, _ = run.load_weights(weights_file)
    try:
        load_into(model, weights, f"in {run_path}")
    except RunError as exc:  # a diagnostic naming the file
        raise RunError(str(exc), "E0704", run.file(weights_file)) from None
    return p, model, step, run
