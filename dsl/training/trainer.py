"""The training loop: seeded, checkpointed, resumable, optionally distributed.

Each step calls the training step module (:mod:`dsl.building.train_step`): the
compiled model followed by the train section's loss and metrics, one
``torch.fx.GraphModule`` taking the batch's fields by name. It returns the
loss, the tensors each metric reads and the model's auxiliary losses
(``"aux:..."``, coefficients in ``model.dsl_aux_weights``), which are added to
the loss automatically and reported separately.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from dsl.checking.train.config import TrainConfig
from dsl.checking.train.objective import LOSS, MetricUse
from dsl.data.base import Dataset
from dsl.language.errors import RunError
from dsl.training.hooks import Hook, make_hooks
from dsl.training.loggers import Loggers
from dsl.training.metrics import SplitMetrics
from dsl.training.rundir import BEST_FILE, STATE_FILE, ResumeError, RunDir, check_state
from dsl.training.schedules import Schedule


class NonFiniteLoss(RunError):
    """The loss (or the weights) became NaN or infinite: the run stops, the last good checkpoint stays."""


# Steps between reads of the loss terms when reading them costs a device synchronisation
# (CUDA) or a collective (several processes); see Trainer.sync_every.
SYNC_EVERY = 32


def input_names(module: nn.Module) -> list[str]:
    """The fields a compiled module (a model or a training step) takes, in order."""
    graph = getattr(module, "graph", None)
    if graph is not None:
        return [n.target for n in graph.nodes if n.op == "placeholder"]
    return list(inspect.signature(module.forward).parameters)


def make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    name, p = cfg.optimizer
    if name == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay, nesterov=p.nesterov)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=p.lr, alpha=p.alpha, eps=p.eps, momentum=p.momentum,
                                   weight_decay=p.weight_decay, centered=p.centered)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=p.lr, betas=p.betas, eps=p.eps, weight_decay=p.weight_decay)
    return torch.optim.Adam(params, lr=p.lr, betas=p.betas, eps=p.eps, weight_decay=p.weight_decay)


def make_schedule(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int = 1,
                  mode: str = "min") -> Schedule | None:
    """The learning-rate schedule (:mod:`dsl.training.schedules`), or None."""
    if cfg.schedule is None:
        return None
    return Schedule(cfg, opt, steps_per_epoch, mode)


AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Reporter:
    """A rich progress bar on a terminal; plain lines otherwise (or with quiet)."""

    def __init__(self, enabled: bool, quiet: bool, total_epochs: int, steps: int):
        self.enabled = enabled
        self.rich = enabled and not quiet and sys.stdout.isatty()
        self.progress: Any = None
        self.task: Any = None
        if self.rich:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
            )
            self.task = self.progress.add_task("train", total=total_epochs * steps, epoch="", info="")
            self.progress.start()

    def step(self, epoch: int, info: str) -> None:
        if self.rich:
            self.progress.update(self.task, advance=1, epoch=str(epoch), info=info)

    def step_terms(self, epoch: int, terms: dict[str, float]) -> None:
        """Advance by one step showing ``terms``; formats them only when a bar shows them."""
        if self.rich:
            self.step(epoch, " ".join(f"{k} {_fmt(v)}" for k, v in terms.items()))

    def epoch(self, line: str) -> None:
        if not self.enabled:
            return
        if self.rich:
            self.progress.console.print(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.rich:
            self.progress.stop()


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


class _TermLog:
    """One epoch's loss terms: their running sums, the progress line, and the NaN/inf stop.

    With ``trainer.sync_every == 1`` each step's terms are read at once (as floats) and
    checked before the optimizer step. Otherwise they stay on the device (one small
    ``stack`` per step) and are read, checked and summed every ``sync_every`` steps and
    at :meth:`flush`: one synchronisation per window instead of one per term and step.
    Either way the sums are the same float64 additions in the same order.
    """

    def __init__(self, trainer: Trainer, epoch: int, report: Reporter):
        self.trainer, self.epoch, self.report = trainer, epoch, report
        self.every = max(1, int(trainer.sync_every))
        self.aux_keys = tuple(trainer.aux_weights)  # reported after the loss, when the model returns them
        self.sums: dict[str, float] = {}
        self.pending: list[tuple[int, tuple[str, ...], Tensor]] = []  # (step, term names, values)

    def add(self, step: int, loss: Tensor | float, names: dict[str, Tensor]) -> None:
        """The terms of step ``step`` (before its optimizer step)."""
        tr = self.trainer
        if self.every == 1:
            # .item(): a Python float without float(t.detach())'s extra tensor (every step)
            terms = {"loss": loss.item() if isinstance(loss, Tensor) else float(loss)}
            for key in self.aux_keys:
                if key in names:
                    terms[key] = names[key].item()
            if tr.world > 1 or not all(map(math.isfinite, terms.values())):
                tr._stop_if_not_finite(terms, self.epoch, step)  # before the step: the weights stay good
            self._count(terms, step)
            return
        keys = ("loss", *(k for k in self.aux_keys if k in names))
        # float64, as float(...) would read them: the sums below are then the same additions.
        first = (loss.detach().double() if isinstance(loss, Tensor)
                 else torch.tensor(float(loss), dtype=torch.float64, device=tr.device))
        values = torch.stack([first.reshape(()), *(names[k].detach().double().reshape(()) for k in keys[1:])])
        self.pending.append((step, keys, values))
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        """Read the pending steps' terms (one synchronisation), check them, add them up."""
        pending, self.pending = self.pending, []
        if self.every == 1:
            return
        flat = torch.cat([v for _, _, v in pending]).tolist() if pending else []
        rows: list[dict[str, float]] = []
        first: tuple[int, str, float] | None = None
        at = 0
        for step, keys, _ in pending:
            terms = dict(zip(keys, flat[at : at + len(keys)], strict=True))
            at += len(keys)
            bad = next(((k, v) for k, v in terms.items() if not math.isfinite(v)), None)
            if bad is not None and first is None:
                first = (step, bad[0], bad[1])
            rows.append(terms)
        self.trainer._stop_at_first_not_finite(first, self.epoch)
        for (step, _, _), terms in zip(pending, rows, strict=True):
            self._count(terms, step)

    def _count(self, terms: dict[str, float], step: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.report.step_terms(self.epoch + 1, terms)
        if self.trainer.loggers.active:
            self.trainer.log_step(self.epoch, step, terms)


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        step: nn.Module,
        cfg: TrainConfig,
        metrics: list[MetricUse],
        data: Dataset,
        *,
        run: RunDir | None = None,
        meta: dict[str, Any] | None = None,
        device: str = "cpu",
        quiet: bool = False,
        rank: int = 0,
        world: int = 1,
        torch_compile: bool = False,
        verbose: bool = True,
        loggers: list[str] | None = None,
    ):
        self.cfg = cfg
        self.metrics = metrics
        self.data = data
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.step = step.to(self.device)  # holds `model` as its submodule: the same parameters
        self.run = run if rank == 0 else None
        self.meta = dict(meta or {})
        self.rank, self.world = rank, world
        self.quiet = quiet
        self.verbose = verbose and rank == 0
        self.aux_weights: dict[str, float] = dict(getattr(model, "dsl_aux_weights", {}) or {})
        self.net: nn.Module = self.step
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Unused parameters are normal here (experts a gate did not pick).
            self.net = DDP(self.step, find_unused_parameters=True)
        self.fwd: Any = torch.compile(self.net) if torch_compile else self.net
        # Batches come from the CPU: moving them is a no-op there.
        self._move = self.device.type != "cpu"
        self._amp = AUTOCAST.get(cfg.precision)  # autocast only when the spec asks (precision = "bf16"/"fp16")
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise RunError('precision = "fp16" needs a CUDA device; on the CPU use "bf16" or "32"')
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        # Steps between reads of the loss terms (and NaN/inf checks). Reading a CPU tensor is
        # free, so a single CPU process reads every step and stops *before* a bad step's update.
        # On a GPU each read stalls the launch queue and under DDP each check is a collective:
        # there the terms stay on the device and are read together every SYNC_EVERY steps (and
        # at the end of the epoch); a bad step is still named, but the steps after it in its
        # window have been taken (the checkpoint on disk is the last good one either way).
        self.sync_every = 1 if self.device.type == "cpu" and world == 1 else SYNC_EVERY
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # A model without weights (nearest-centroid) can still be evaluated.
        self.opt: Any = make_optimizer(cfg, trainable) if trainable else None
        self.val_split = "val" if "val" in data.eval_splits and data.num_items("val") > 0 else None
        self.test_split = "test" if "test" in data.eval_splits and data.num_items("test") > 0 else None
        self.steps_per_epoch = -(-data.num_batches("train", world) // cfg.accumulate)
        mon = self.monitor()
        self.sched = (make_schedule(cfg, self.opt, self.steps_per_epoch, mon[1] if mon else "min")
                      if self.opt is not None else None)
        # Loss terms a hook adds for a while (the last-layer stage's L1), each a no-argument callable.
        self.extra_losses: list[Any] = []
        self.inputs = input_names(self.step)
        self.epoch = 0
        self.global_step = 0
        self.best: dict[str, Any] = {}
        self.watched: float | None = None  # the best validation value of any epoch (early stopping's)
        self.best_weights: dict[str, Tensor] | None = None  # a CPU copy of the weights the validation chose
        self.test: dict[str, Any] = {}  # the test split's numbers once the run is over
        self.bad_epochs = 0
        self.stopped = False
        self.history: list[dict[str, Any]] = []
        self.logger_names = list(cfg.loggers if loggers is None else loggers)
        self.loggers = Loggers([], None)  # opened by fit, on rank 0 of a run with a directory
        self.hooks: list[Hook] = make_hooks(self)

    # ------------------------------------------------------------------ steps

    def _autocast(self) -> Any:
        if self._amp is not None:
            return torch.autocast(self.device.type, dtype=self._amp)
        return nullcontext()

    def _forward(self, module: Any, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The step's results on one batch: the loss, the metrics' tensors, the auxiliary losses."""
        if self._move:
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        if self._amp is not None:
            with self._autocast():
                return module(**{k: batch[k] for k in self.inputs})
        return module(**{k: batch[k] for k in self.inputs})

    def _rows(self, batch: dict[str, Tensor]) -> int:
        first = batch[self.inputs[0]] if self.inputs else next(iter(batch.values()))
        return int(first.shape[0]) if first.dim() else 1

    def train_epoch(self, epoch: int, report: Reporter) -> dict[str, float]:
        """One pass over the training split; the mean of each loss term, and the throughput."""
        if self.cfg.accumulate > 1 or self.scaler is not None:
            return self._train_epoch_accumulating(epoch, report)
        self.net.train()
        aux = list(self.aux_weights.items())
        log = _TermLog(self, epoch, report)
        steps, rows, t0 = 0, 0, time.perf_counter()
        for batch in self.data.batches("train", epoch, self.rank, self.world):
            names, loss, total = self._losses(batch, aux)
            log.add(steps, loss, names)  # reads and checks the terms every `sync_every` steps
            self.opt.zero_grad(set_to_none=True)
            total.backward()
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self._after_optimizer_step(epoch, steps)
            steps += 1
            rows += self._rows(batch)
        log.flush()
        return self._epoch_terms(log, steps, rows, t0)

    def _losses(self, batch: dict[str, Tensor], aux: list[tuple[str, float]]) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The step's outputs, its loss, and the loss plus the weighted auxiliary losses."""
        names = self._forward(self.fwd, batch)
        loss = names[LOSS]
        total = loss
        for key, weight in aux:
            if key in names:
                total = total + weight * names[key]
        for term in self.extra_losses:
            total = total + term()
        return names, loss, total

    def _after_optimizer_step(self, epoch: int, step: int) -> None:
        self.global_step += 1
        if self.sched is not None:
            self.sched.after_step()
        for hook in self.hooks:
            hook.after_step(self, epoch, step)

    def _train_epoch_accumulating(self, epoch: int, report: Reporter) -> dict[str, float]:
        """:meth:`train_epoch` with ``accumulate`` batches to an optimizer step, or fp16 loss scaling."""
        self.net.train()
        aux = list(self.aux_weights.items())
        log = _TermLog(self, epoch, report)
        every = self.cfg.accumulate
        total_batches = self.data.num_batches("train", self.world)
        batches, rows, t0 = 0, 0, time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        for batch in self.data.batches("train", epoch, self.rank, self.world):
            last = (batches + 1) % every == 0 or batches + 1 == total_batches
            # Under DDP only the batch before an optimizer step averages the gradients across ranks.
            with self.net.no_sync() if self.world > 1 and not last else nullcontext():
                names, loss, total = self._losses(batch, aux)
                log.add(batches, loss, names)
                share = total / every if every > 1 else total
                (self.scaler.scale(share) if self.scaler is not None else share).backward()
            if last:
                self._optimizer_step()
                self._after_optimizer_step(epoch, batches // every)
            batches += 1
            rows += self._rows(batch)
        log.flush()
        return self._epoch_terms(log, batches, rows, t0)

    def _optimizer_step(self) -> None:
        if self.scaler is not None:
            if self.cfg.grad_clip is not None:
                self.scaler.unscale_(self.opt)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            if self.cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def log_step(self, epoch: int, batch: int, terms: dict[str, float]) -> None:
        """Per-step events to the loggers (``batch`` counts the epoch's batches from 0)."""
        step = epoch * self.steps_per_epoch + batch // self.cfg.accumulate + 1
        self.loggers.step(terms, float(self.opt.param_groups[0]["lr"]), epoch + 1, step)

    def _epoch_terms(self, log: _TermLog, steps: int, rows: int, t0: float) -> dict[str, float]:
        out = {k: v / max(steps, 1) for k, v in log.sums.items()}
        out = self._reduce_mean(out)
        elapsed = time.perf_counter() - t0
        out["throughput"] = rows * self.world / elapsed if elapsed > 0 else 0.0
        return out

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        """The loss and every metric on ``split`` (torchmetrics, synchronised across ranks)."""
        self.step.eval()
        values = SplitMetrics(self.metrics, self.device, self.world)
        for batch in self.data.batches(split, 0, self.rank, self.world):
            values.update(self._forward(self.step, batch), self._rows(batch))
        return values.compute()

    def _stop_if_not_finite(self, terms: dict[str, float], epoch: int, step: int) -> None:
        """Stop on a NaN/inf term of one step (every rank together)."""
        bad = next(((k, v) for k, v in terms.items() if not math.isfinite(v)), None)
        if self.world > 1:  # every rank stops together; one raising alone would hang the others
            import torch.distributed as dist

            flag = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
            dist.all_reduce(flag)
            if bad is None and float(flag) > 0:
                bad = ("loss on another rank", math.nan)
        if bad is not None:
            self._not_finite(bad, epoch, step)

    def _stop_at_first_not_finite(self, first: tuple[int, str, float] | None, epoch: int) -> None:
        """Stop if a step of a window of steps had a NaN/inf term: ``first`` is (step, name, value).

        Under DDP the ranks agree on the earliest bad step of the window with one collective."""
        step = first[0] if first is not None else -1
        if self.world > 1:
            import torch.distributed as dist

            none = torch.iinfo(torch.int64).max
            t = torch.tensor([none if first is None else first[0]], dtype=torch.int64, device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
            step = -1 if int(t) == none else int(t)
            if step >= 0 and (first is None or first[0] != step):
                first = (step, "loss on another rank", math.nan)
        if first is not None and step >= 0:
            self._not_finite((first[1], first[2]), epoch, step)

    def _not_finite(self, bad: tuple[str, float], epoch: int, step: int) -> None:
        raise NonFiniteLoss(f"{bad[0]} is {bad[1]} at epoch {epoch + 1}, step {step + 1}: training stopped. "
                            f"{self._kept(self.epoch)} Lower the learning rate, set grad_clip, or check the data for "
                            "NaN/inf values")

    def _kept(self, epoch: int) -> str:
        """Which checkpoint survives a stop; ``epoch``: the last one completed and saved."""
        if self.run is None or epoch == 0:
            return "No checkpoint was written."
        return f"The last good checkpoint (epoch {epoch}) is kept in {self.run.path}."

    def _reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return values
        import torch.distributed as dist

        t = torch.tensor(list(values.values()), dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(values, t.tolist(), strict=True)}

    # ------------------------------------------------------------------ monitoring

    def monitor(self) -> tuple[str, str] | None:
        """(metric name, "max"|"min") that picks the best epoch on the validation split and drives
        early stopping and the plateau schedule."""
        es = self.cfg.early_stop
        if es is not None:
            return es.metric, es.mode or "min"
        if self.metrics:
            m = self.metrics[0]
            return m.name, "max" if m.higher_is_better else "min"
        return "loss", "min"

    def _improved(self, value: float, mode: str, best: float | None) -> bool:
        if best is None or math.isnan(value):
            return not math.isnan(value)
        delta = self.cfg.early_stop.min_delta if self.cfg.early_stop else 0.0
        return value > best + delta if mode == "max" else value < best - delta

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "epoch": self.epoch,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else {},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "global_step": self.global_step,
            "rng": torch.get_rng_state(),
            "best": dict(self.best),
            "watched": self.watched,
            "bad_epochs": self.bad_epochs,
            "stopped": self.stopped,
            "hooks": {h.name: h.state_dict() for h in self.hooks},
        }
        if self.device.type == "cuda":
            st["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return st

    def load_state(self, st: dict[str, Any], weights: dict[str, Tensor]) -> None:
        self.model.load_state_dict(weights)
        self.epoch = int(st["epoch"])
        saved = st.get("hooks") or {}
        for hook in self.hooks:  # first: a hook may set up the optimizer the saved state belongs to
            if hook.name in saved:
                hook.load_state_dict(saved[hook.name])
        self.opt.load_state_dict(st["optimizer"])
        if self.sched is not None and st.get("scheduler"):
            self.sched.load_state_dict(st["scheduler"])
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["rng"])
        if "cuda_rng" in st and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
        self.global_step = int(st.get("global_step", self.epoch * self.steps_per_epoch))
        self.best = dict(st.get("best") or {})
        watched = st.get("watched", self.best.get("value"))  # a state from before `watched`: the best's value
        self.watched = float(watched) if watched is not None else None
        self.bad_epochs = int(st.get("bad_epochs", 0))
        self.stopped = bool(st.get("stopped", False))

    def resume(self) -> None:
        """Continue from the run directory's last checkpoint (all ranks load it)."""
        run = RunDir(self.run.path if self.run else self.meta["run_dir"])
        if not run.has_checkpoint():  # killed before its first checkpoint: start from the beginning
            if self.run is not None:
                self.run.truncate_metrics(0)
            return
        st = check_state(run.load_state(), run.file(STATE_FILE))
        weights, w_epoch = run.load_weights()
        committed = run.committed_epoch()
        if {w_epoch, committed} - {None, int(st["epoch"])}:
            raise ResumeError(
                f"the checkpoint in {run.path} is torn: weights are from epoch {w_epoch}, "
                f"optimizer state from epoch {st['epoch']}, meta.json commits epoch {committed}"
            )
        try:
            self.load_state(st, weights)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
            raise ResumeError(f"the checkpoint in {run.path} does not fit this model and its optimizer "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
        if self.best and os.path.exists(run.file(BEST_FILE)):
            self.best_weights, _ = run.load_weights(BEST_FILE)
        if self.run is not None:
            self.run.truncate_metrics(self.epoch)
            self.history = self.run.read_metrics()

    def checkpoint(self) -> None:
        # Every rank checks (DDP keeps the weights equal), so all stop together.
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise NonFiniteLoss(f"the weights are not finite after epoch {self.epoch}: training stopped. "
                                f"{self._kept(self.epoch - 1)} Lower the learning rate or set grad_clip")
        if self.run is None:
            return
        self.run.save_weights(self.model.state_dict(), self.epoch)
        self.run.save_state(self.state())
        self.meta.update(epoch=self.epoch, best=self.best, stopped_early=self.stopped)
        self.run.write_meta(self.meta)

    # ------------------------------------------------------------------ loop

    def fit(self, stop_after: int | None = None) -> list[dict[str, Any]]:
        """Train from ``self.epoch`` to ``cfg.epochs`` (or ``stop_after`` epochs in total); a run that
        ends (its last epoch, or an early stop) then evaluates the test split once (:meth:`final_test`)."""
        last = self.cfg.epochs if stop_after is None else min(self.cfg.epochs, stop_after)
        steps = self.data.num_batches("train", self.world)
        report = Reporter(self.verbose, self.quiet, max(last - self.epoch, 0), steps)
        mon = self.monitor()
        self._needs_validation()
        if self.run is not None and self.logger_names:
            self.loggers = Loggers(self.logger_names, self.run.path, self.epoch, self.global_step)
        for hook in self.hooks:
            hook.on_fit_start(self)
        try:
            while self.epoch < last and not self.stopped:
                record = self._one_epoch(report, mon)
                self.history.append(record)
                if self.run is not None:
                    self.run.append_metrics(record)
                self.loggers.epoch(record, self.global_step)
                self.checkpoint()
                report.epoch(self._line(record, last))
            for hook in self.hooks:
                hook.on_fit_end(self)
            if self.epoch >= self.cfg.epochs or self.stopped:
                self.final_test()
        finally:
            report.close()
            self.loggers.close()
        return self.history

    def _needs_validation(self) -> None:
        """early_stop and the plateau schedule watch the validation split: refuse to run without one."""
        if self.val_split is not None:
            return
        if self.cfg.early_stop is not None:
            raise RunError("early_stop watches the validation split, and this data has none (give the source "
                           "val > 0, or drop early_stop)")
        if self.cfg.schedule is not None and self.cfg.schedule[0] == "plateau":
            raise RunError("schedule = plateau(...) watches the validation split, and this data has none "
                           "(give the source val > 0, or use another schedule)")

    def _one_epoch(self, report: Reporter, mon: tuple[str, str] | None) -> dict[str, Any]:
        epoch = self.epoch
        t0 = time.perf_counter()
        for hook in self.hooks:
            hook.on_epoch_start(self, epoch)
        lr = self.opt.param_groups[0]["lr"]
        train = self.train_epoch(epoch, report)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train": train}
        watched = self.val_split or ("graph" if "graph" in self.data.eval_splits else None)
        if watched is not None:
            record[watched] = self.evaluate(watched)
        self.epoch = epoch + 1
        for hook in self.hooks:
            hook.on_epoch_end(self, record)
        record["time"] = time.perf_counter() - t0
        value = record[watched].get(mon[0], math.nan) if mon is not None and watched is not None else math.nan
        if self.sched is not None:
            self.sched.after_epoch(value)
        if mon is not None and self.val_split is not None:
            self._track_best(value, mon, all(h.selectable(self, record) for h in self.hooks))
        return record

    def _track_best(self, value: float, mon: tuple[str, str], selectable: bool) -> None:
        """Early stopping watches every epoch; the best weights come from the epochs the hooks
        allow (a run that pushes prototypes: only weights whose prototypes are training patches)."""
        if self._improved(value, mon[1], self.watched):
            self.watched, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if selectable:
            self._offer_best(value, mon)
        es = self.cfg.early_stop
        if es is not None and self.bad_epochs >= es.patience:
            self.stopped = True

    def _offer_best(self, value: float, mon: tuple[str, str]) -> None:
        if self._improved(value, mon[1], self.best.get("value")):
            self.best = {"metric": mon[0], "split": self.val_split, "value": value, "epoch": self.epoch}
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            if self.run is not None:
                self.run.save_weights(self.best_weights, self.epoch, BEST_FILE)

    def reconsider_best(self, record: dict[str, Any]) -> None:
        """A hook rewrote the last epoch's ``record`` and weights after the loop (the push after an
        early stop): offer them as the best, without counting the epoch again for early stopping."""
        mon = self.monitor()
        if mon is None or self.val_split is None or self.val_split not in record:
            return
        if all(h.selectable(self, record) for h in self.hooks):
            self._offer_best(record[self.val_split].get(mon[0], math.nan), mon)

    def final_test(self) -> dict[str, Any]:
        """The test split, once, on the weights of the best validation epoch (the last epoch's without a
        validation split). Written to ``meta.json`` under ``test``; the model goes back to the last
        epoch's weights (those of ``model.safetensors``)."""
        if self.test_split is None:
            return {}
        chosen = "best" if self.best_weights is not None else "last"
        last = None
        if self.best_weights is not None:
            last = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.best_weights)
        epoch = int(self.best.get("epoch", self.epoch)) if chosen == "best" else self.epoch
        self.test = {"epoch": epoch, "weights": chosen, **self.evaluate(self.test_split)}
        if last is not None:
            self.model.load_state_dict(last)
        self.loggers.epoch({"epoch": epoch, "test": {k: v for k, v in self.test.items()
                                                     if k not in ("epoch", "weights")}}, self.global_step)
        if self.run is not None:
            self.meta.update(test=self.test, epoch=self.epoch)
            self.run.write_meta(self.meta)
        return self.test

    def _line(self, r: dict[str, Any], last: int) -> str:
        parts = [f"epoch {r['epoch']}/{last}" + (f" [{r['stage']}]" if r.get("stage") else "")]
        parts += [f"{k} {_fmt(v)}" for k, v in r["train"].items() if k != "throughput"]
        for split in ("val", "graph"):
            if r.get(split):
                parts.append(f"{split}: " + " ".join(f"{k} {_fmt(v)}" for k, v in r[split].items()))
        parts.append(f"{r['train']['throughput']:.0f} ex/s")
        if "push" in r:  # the validation numbers above are the pushed prototypes'
            parts.append("(pushed)")
        if self.stopped:
            parts.append("(early stop)")
        return "  ".join(parts)


def final_table(history: list[dict[str, Any]], splits: tuple[str, ...], best: dict[str, Any],
                test: dict[str, Any] | None = None) -> Any:
    """A rich table: the training loss of the last epoch, the validation numbers of the epoch they
    chose, and the test split's on those weights; narrow enough for 80 columns."""
    from rich.table import Table

    last = history[-1] if history else {}
    chosen = next((r for r in history if r.get("epoch") == best.get("epoch")), last) if best else last
    rows: list[tuple[str, dict[str, Any]]] = [("train", last.get("train", {}))]
    rows += [(s, chosen[s]) for s in ("val", "graph") if s in chosen]
    if test:
        rows.append(("test", {k: v for k, v in test.items() if k not in ("epoch", "weights")}))
    keys: list[str] = []
    for _, values in rows:
        keys += [k for k in values if k not in keys and k != "throughput"]
    table = Table(title="results", title_justify="left")
    table.add_column("split")
    table.add_column("epoch", justify="right")
    for k in keys:
        table.add_column(k, justify="right", overflow="fold")
    epochs = {"train": last.get("epoch"), "val": chosen.get("epoch"), "graph": chosen.get("epoch"),
              "test": (test or {}).get("epoch")}
    for name, values in rows:
        table.add_row(name, str(epochs.get(name) or ""), *[_fmt(values[k]) if k in values else "" for k in keys])
    return table


def selection_note(trainer: Trainer) -> str:
    """Which weights the test split saw, in one line."""
    best = trainer.best
    if best and trainer.test:
        return (f"test: once, on epoch {best['epoch']}'s weights (best val {best['metric']} "
                f"{best['value']:.4f})")
    if trainer.test and trainer.val_split is not None:
        return "test: once, on the last epoch's weights (no epoch the validation could choose from)"
    if trainer.test:
        return "test: once, on the last epoch's weights (this data has no validation split)"
    if trainer.val_split is None:
        return "this data has no validation split and no test split"
    return f"best val {best['metric']} at epoch {best['epoch']}" if best else ""
