"""Trained runs from Python: :func:`train` returns a :class:`Run`, :func:`load_run` its model.

``dsl.train(spec, data=None, out=None, **overrides)`` is ``dsl train``: the same
preparation, trainer, progress lines and run directory (same seed, same weights, bit
for bit). ``dsl.load_run(path)`` is what ``dsl predict`` runs: the model as
``dsl.compile`` builds it (declared outputs, guards on), the run's weights, eval mode,
behind the run's input preprocessing (:mod:`dsl.building.preprocess`), so it takes raw
inputs. :func:`open_run` gives the pieces to ``dsl predict``, ``dsl eval`` and
``dsl export``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsl.data.preprocess import MAX_BYTES as PREPROCESS_MAX_BYTES
from dsl.data.preprocess import PREPROCESS_FILE, Preprocessing
from dsl.data.preprocess import parse as parse_preprocessing
from dsl.language import ir
from dsl.language.errors import RunError, SpecError
from dsl.language.source import load
from dsl.training.checkpoint import load_into
from dsl.training.rundir import BEST_FILE, META_FILE, MODEL_FILE, RunDir, run_settings, run_spec
from dsl.training.session import Options, Prepared, load_data, prepare, read_data_record

TRAIN_KEYS = ("epochs", "seed")  # overrides of dsl.train that set train keys, as --epochs and --seed do
DATA_EXPR = "data_expr"  # meta.json: the data= expression a run was trained with


# --------------------------------------------------------------------------- which run, which weights


def locate(path: str | os.PathLike[str], best: bool = False) -> tuple[RunDir, str]:
    """(run directory, weights file name) of ``path``: a run directory, or one of its
    checkpoints (``RUN/model.safetensors``, ``RUN/best.safetensors``)."""
    path = os.fspath(path)
    name = BEST_FILE if best else MODEL_FILE
    if os.path.basename(path) in (MODEL_FILE, BEST_FILE) and not os.path.isdir(path):
        if best and os.path.basename(path) != BEST_FILE:
            raise RunError(f"--best asks for {BEST_FILE}, but {path} names the last epoch's weights")
        path, name = os.path.dirname(path) or ".", os.path.basename(path)
    run = RunDir(path)
    if not os.path.isdir(path):
        raise RunError(f"{path}: no such run directory (nothing to load {name} from)", "E0702", path)
    if not os.path.lexists(run.file(name)) and not os.path.lexists(run.file(run.committed_file(name))):
        if name == BEST_FILE and os.path.isfile(run.file(MODEL_FILE)):
            raise RunError(f"{path} has no {BEST_FILE}: no epoch of the run was chosen on a validation split",
                           "E0702", path)
        raise RunError(f"{path}: no {name} (not a run directory, or no epoch finished)", "E0702", path)
    return run, name


# --------------------------------------------------------------------------- opening a run


@dataclass
class Opened:
    """A finished run, ready to use: its prepared spec, its trained model (declared outputs,
    eval mode, guards on), its preprocessing, where it came from."""

    prepared: Prepared
    model: Any
    preprocessing: Preprocessing
    run: RunDir
    weights_file: str

    def trained(self) -> Any:
        """The model behind the preprocessing: raw inputs in."""
        from dsl.building.preprocess import with_preprocessing

        return with_preprocessing(self.model, self.preprocessing).eval()


def open_run(path: str | os.PathLike[str], best: bool = False, spec: ir.Spec | str | None = None,
             overrides: Mapping[str, Any] | None = None, dims: Mapping[str, int] | None = None,
             max_params: int | None = None) -> Opened:
    """Rebuild a run's model with its weights; the run's overrides, dims and seed apply unless
    given again, and its spec unless ``spec`` is given."""
    import torch

    from dsl.building.model import build_model

    run, weights_file = locate(path, best)
    meta = run.read_meta() if run.exists() else {}
    p = _prepare_run(run, meta, spec, overrides, dims, max_params)
    torch.manual_seed(p.cfg.seed)
    model = build_model(p.analysis)
    weights, _ = run.load_weights(weights_file)
    load_into(model, weights, run.file(weights_file), _hint(meta))
    return Opened(p, model.eval(), _preprocessing(run, p), run, weights_file)


def _prepare_run(run: RunDir, meta: dict[str, Any], spec: ir.Spec | str | None,
                 overrides: Mapping[str, Any] | None, dims: Mapping[str, int] | None,
                 max_params: int | None) -> Prepared:
    if spec is None:
        spec = run_spec(run, meta)  # the run's own copy: a path meta.json names is never opened (SECURITY.md)
    spec = load(spec) if isinstance(spec, str) else spec
    if isinstance(meta.get(DATA_EXPR), str):
        spec = with_data(spec, meta[DATA_EXPR])
    fields, sizes = read_data_record(meta, run.file(META_FILE))  # the model is rebuilt without the data
    settings = run_settings(meta, run.file(META_FILE))  # type-checked: the directory is untrusted
    p = prepare(spec, {**settings["overrides"], **dict(overrides or {})},
                {**settings["dims"], **dict(dims or {})}, {"seed": settings["seed"]}, max_params, fields, sizes)
    if p.analysis.fields is None:  # a source that declares its fields only when loaded (.pt)
        from dsl.training.session import with_loaded_fields

        p = with_loaded_fields(p, load_data(p.cfg), p.dims)
    return p


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


def _hint(meta: dict[str, Any]) -> str:
    sets = _dict(meta.get("overrides"))
    if not sets:
        return ""
    return f" (the run was trained with --set {' --set '.join(f'{k}={v}' for k, v in sets.items())})"


def _preprocessing(run: RunDir, p: Prepared) -> Preprocessing:
    """As the run saved it; for a run from before ``preprocess.json``, recomputed from its source."""
    if os.path.lexists(run.file(PREPROCESS_FILE)):  # a regular file inside the run (RunDir.read_file), bounded
        return parse_preprocessing(run.read_file(PREPROCESS_FILE, PREPROCESS_MAX_BYTES), run.file(PREPROCESS_FILE))
    if p.cfg.source is None:
        return Preprocessing()
    from dsl.data.preprocess import of_dataset

    return of_dataset(load_data(p.cfg))


def load_run(path: str | os.PathLike[str], best: bool = False) -> Any:
    """A run's trained model, in eval mode with its guards on, taking raw inputs as
    ``dsl predict`` does (standardised here when the run's source standardised them).

    ``best=True`` loads the weights the validation split chose (``best.safetensors``)."""
    return open_run(path, best).trained()


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Run:
    """A run directory: ``dir``, its ``metrics`` (one record per epoch), its ``best`` epoch."""

    dir: str

    @property
    def meta(self) -> dict[str, Any]:
        return RunDir(self.dir).read_meta()

    @property
    def metrics(self) -> list[dict[str, Any]]:
        return RunDir(self.dir).read_metrics()

    @property
    def best(self) -> dict[str, Any]:
        """The best epoch as the validation split chose it: metric, split, value, epoch."""
        return _dict(self.meta.get("best"))

    def model(self, best: bool = False) -> Any:
        """The trained model (:func:`load_run`)."""
        return load_run(self.dir, best)


def train(spec: ir.Spec | str | os.PathLike[str], data: Any = None, out: str | os.PathLike[str] | None = None, *,
          dims: Mapping[str, int] | None = None, device: str = "cpu", quiet: bool = False, resume: bool = False,
          **overrides: Any) -> Run:
    """Train ``spec`` as ``dsl train`` does and return the :class:`Run`.

    ``data``: a source expression (``"digits(batch=32)"``) that replaces the train section's
    ``data``, or a ``torch.utils.data.Dataset`` of dicts (or a dict of them by split:
    :mod:`dsl.training.pydata`). ``epochs=`` and ``seed=`` set those train keys; any other
    keyword overrides a param (``hidden=32``), as ``--set`` does."""
    from dsl.training import pydata, session

    spec = load(os.fspath(spec)) if not isinstance(spec, ir.Spec) else spec
    train_overrides = {k: overrides.pop(k) for k in TRAIN_KEYS if k in overrides}
    extra: dict[str, Any] = {}
    fields = None
    if isinstance(data, str):
        spec, extra[DATA_EXPR] = with_data(spec, data), data
    elif data is not None:
        fields = pydata.fields_of(data)  # meta.json records them, as for every run
    p = prepare(spec, overrides, dict(dims or {}), train_overrides, fields=fields)
    loaded = pydata.adapt(data, p.cfg.batch, p.cfg.seed) if fields is not None else None
    opts = Options(out=None if out is None else os.fspath(out), resume=resume, device=device, quiet=quiet,
                   extra=extra)
    trainer = session.train(p, opts, data=loaded)
    if not quiet:
        show_summary(trainer)
    return Run(trainer.run.path)


def show_summary(trainer: Any, console: Any = None, hooks: bool = True) -> None:
    """The final table (and what hooks show at the end: expert usage, sparsity), and the run directory."""
    import sys

    from rich.console import Console

    from dsl.training.trainer import final_table, selection_note

    console = console or Console(file=sys.stdout)
    console.print(final_table(trainer.history, trainer.data.eval_splits, trainer.best, trainer.test))
    console.print(selection_note(trainer), highlight=False)
    floor = getattr(trainer.data, "info", {}).get("entropy_val")
    if floor is not None:
        console.print(f"the generated corpus's entropy, the lowest loss possible: {floor:.4f} nats per character (val)")
    if hooks:
        for hook in trainer.hooks:
            for renderable in hook.summary(trainer):
                console.print(renderable)
    if trainer.run is not None:
        console.print(f"run directory: {trainer.run.path}", soft_wrap=True)  # a path to copy: never wrapped


def with_data(spec: ir.Spec, text: str) -> ir.Spec:
    """``spec`` with its train section's ``data`` replaced by the expression ``text``."""
    from dsl.language.text import parse_expr

    if spec.train is None:
        raise RunError(f"{spec.file} has no `train` section to train with data={text!r}")
    try:
        value = parse_expr(text, file="<data>")
    except SpecError as exc:
        raise SpecError(exc.diagnostics, {**exc.sources, "<data>": text}) from None
    entry = ir.TrainEntry(key="data", value=value, span=value.span)
    entries = tuple(e for e in spec.train.entries if e.key != "data") + (entry,)
    return spec.model_copy(update={"train": spec.train.model_copy(update={"entries": entries})})


