"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

``prune = magnitude(sparsity=0.9, start=0, end=30, every=1, layers=[h, logits])``
in the ``train`` section prunes the Linear weights of the named layers
(default: every ``nn.Linear`` of the model) along the paper's cubic schedule::

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3      t ∈ {t0, t0 + Δt, ..., t0 + n Δt}

with s_f = ``sparsity``, s_i = ``initial`` (default 0), t0 = ``start``,
t0 + n Δt = ``end`` and Δt = ``every``. **t counts finished epochs** (the
loop's unit everywhere else: schedules, early stopping, resume): the step for
t runs after epoch t (t = 0: before the first epoch), so the weights that
epoch t+1 trains and the checkpoint of epoch t carry sparsity s_t. ``end`` is
always a pruning step, even when ``end - start`` is not a multiple of ``every``;
after ``end`` training goes on at s_f (the paper's recovery). A run that stops
before ``end`` keeps the last target it reached, and reports it.

Each step prunes, per layer (``scope="layer"``, the paper's choice), the
smallest-magnitude weights among those still alive until round(s_t · n) of the
layer's n weights are masked; ``scope="global"`` ranks all the selected weights
together instead. Masks only grow, so a pruned weight stays pruned. The masks are
``torch.nn.utils.prune`` reparametrisations (weight = weight_orig · weight_mask,
so a pruned weight gets no gradient), made permanent with ``prune.remove`` at
the end of ``fit``.

Checkpoints keep the plain keys: a state-dict hook on each pruned layer writes
``weight`` = weight_orig · weight_mask (exact zeros) instead of the two
reparametrisation tensors, so ``model.safetensors`` loads into the plain model
that ``dsl eval``/``predict`` build. The masks (bool tensors) are the hook's
checkpointed state; ``--resume`` re-attaches them before training on.

``layers`` names what the model assigns (``h``, ``logits``, ``z``): a name
selects every Linear inside the blocks called by the statements that assign it
(nested calls and ``repeat`` copies included). Each epoch record gets
``"pruning": {"target", "sparsity", "weights", "nonzero", "layers": {path: sparsity}}``.

The spec side (:mod:`dsl.checking.train.prune`) is pure Python; torch is imported only by the hook.
"""

from __future__ import annotations

from typing import Any

from dsl.checking.train.prune import Prune
from dsl.language.diagnostics import Span
from dsl.language.errors import RunError
from dsl.training.hooks import Hook

# --------------------------------------------------------------------------- hook (torch)


def _inside(span: Any, outer: Span) -> bool:
    """Whether ``span`` starts inside ``outer`` (same file)."""
    if not isinstance(span, Span) or not span.known or span.file != outer.file:
        return False
    if outer.end_line == 0:  # an end-less span: its line
        return span.line == outer.line
    return (outer.line, outer.col) <= (span.line, span.col) < (outer.end_line, outer.end_col)


def select(model: Any, cfg: Prune) -> list[tuple[str, Any]]:
    """(module path, module) for every Linear the config prunes, each module once."""
    from torch import nn

    linear = (nn.Linear,)

    chosen: dict[int, tuple[str, Any]] = {}
    if not cfg.layers:
        for path, m in model.named_modules():
            if isinstance(m, linear):
                chosen.setdefault(id(m), (path, m))
        return list(chosen.values())
    graph = getattr(model, "graph", None)
    for name in cfg.layers:
        before = len(chosen)
        for node in graph.nodes if graph is not None else ():
            if node.op != "call_module" or not any(_inside(node.meta.get("span"), s) for s in cfg.spans[name]):
                continue
            block = model.get_submodule(node.target)
            for sub, m in block.named_modules():
                if isinstance(m, linear):
                    chosen.setdefault(id(m), (f"{node.target}.{sub}" if sub else node.target, m))
        if len(chosen) == before:
            raise RunError(f"prune: layer `{name}` has no Linear weights (or shares them with a layer named before)")
    return list(chosen.values())


def _plain_weight(module: Any, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: ``weight`` = weight_orig · weight_mask instead of the two tensors."""
    orig, mask = prefix + "weight_orig", prefix + "weight_mask"
    if orig in state_dict and mask in state_dict:
        state_dict[prefix + "weight"] = state_dict.pop(orig) * state_dict.pop(mask)


def _load_plain_weight(module: Any, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: a plain ``weight`` loads into weight_orig, keeping the current mask."""
    if prefix + "weight" in state_dict and prefix + "weight_orig" not in state_dict:
        state_dict[prefix + "weight_orig"] = state_dict.pop(prefix + "weight")
        state_dict[prefix + "weight_mask"] = module.weight_mask


class Pruning(Hook):
    """Applies the schedule after each epoch; keeps the masks as checkpointed state."""

    name = "pruning"

    def __init__(self, cfg: Prune, targets: list[tuple[str, Any]]):
        self.cfg = cfg
        self.targets = targets
        self.masks: dict[str, Any] = {}  # path -> bool mask on the CPU: the state resume restores
        self.handles: list[Any] = []

    # -- reparametrisation
    @property
    def attached(self) -> bool:
        return bool(self.handles)

    def attach(self) -> None:
        """Put the masks (all ones for a layer not pruned yet) on every target layer."""
        import torch
        from torch.nn.utils import prune

        for path, m in self.targets:
            mask = self.masks.get(path)
            mask = torch.ones_like(m.weight, dtype=torch.bool) if mask is None else mask.to(m.weight.device)
            prune.custom_from_mask(m, "weight", mask)
            self.handles.append(m.register_state_dict_post_hook(_plain_weight))
            self.handles.append(m.register_load_state_dict_pre_hook(_load_plain_weight))

    def detach(self) -> None:
        """Make the masks permanent (``prune.remove``): plain weights with exact zeros."""
        from torch.nn.utils import prune

        for h in self.handles:
            h.remove()
        self.handles = []
        for _, m in self.targets:
            if prune.is_pruned(m):
                prune.remove(m, "weight")

    # -- schedule
    def prune_to(self, target: float) -> None:
        """Mask the smallest live weights until round(target · n) are masked (per layer or globally)."""
        from torch.nn.utils import prune

        if self.cfg.args.scope == "layer":
            for _, m in self.targets:
                want = round(target * m.weight_mask.numel())
                have = int((m.weight_mask == 0).sum())
                if want > have:
                    prune.l1_unstructured(m, "weight", amount=want - have)
        else:
            total = sum(m.weight_mask.numel() for _, m in self.targets)
            have = sum(int((m.weight_mask == 0).sum()) for _, m in self.targets)
            want = round(target * total)
            if want > have:
                prune.global_unstructured([(m, "weight") for _, m in self.targets],
                                          pruning_method=prune.L1Unstructured, amount=want - have)
        self.masks = {path: m.weight_mask.detach().to("cpu").bool() for path, m in self.targets}

    def report(self) -> dict[str, Any]:
        """Sparsity per pruned layer and over all of them, from the masks."""
        layers: dict[str, float] = {}
        total = zeros = 0
        for path, m in self.targets:
            mask = self.masks.get(path)
            n = m.weight.numel()
            z = int((~mask).sum()) if mask is not None else 0
            layers[path] = round(z / n, 6)
            total, zeros = total + n, zeros + z
        return {"sparsity": round(zeros / total, 6) if total else 0.0, "weights": total, "nonzero": total - zeros,
                "layers": layers}

    # -- hook points
    def on_fit_start(self, trainer: Any) -> None:
        if not self.attached:
            self.attach()
        self.prune_to(self.cfg.scheduled(trainer.epoch))

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        target = self.cfg.scheduled(trainer.epoch)
        self.prune_to(target)
        record["pruning"] = {"target": round(target, 6), **self.report()}

    def on_fit_end(self, trainer: Any) -> None:
        self.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = dict(state.get("masks") or {})
        if self.attached:  # re-put the restored masks on the layers
            self.detach()
            self.attach()

    def summary(self, trainer: Any) -> list[Any]:
        """The final sparsity per layer, for the end of ``dsl train``."""
        last = trainer.history[-1] if trainer.history else {}
        return [sparsity_table(last["pruning"], self.cfg.args.sparsity)] if "pruning" in last else []


def sparsity_table(p: dict[str, Any], final: float | None = None) -> Any:
    """A rich table of a record's ``pruning`` entry."""
    from rich.table import Table

    from dsl.training.hooks.expert_usage import bar

    t = Table(title="pruning: sparsity per layer", title_justify="left")
    t.add_column("layer")
    t.add_column("sparsity", justify="right")
    t.add_column("")
    for path, s in p["layers"].items():
        t.add_row(path, f"{100 * s:.1f}%", bar(s, 20))
    reached = f"{100 * p['sparsity']:.1f}% of {p['weights']:,} weights pruned, {p['nonzero']:,} left"
    t.caption = reached + (f" · schedule target {100 * final:.1f}%" if final is not None else "")
    return t


def make(trainer: Any) -> Pruning | None:
    cfg: Prune | None = getattr(trainer.cfg, "prune", None)
    if cfg is None or (cfg.args.sparsity == 0 and cfg.args.initial == 0):
        return None  # nothing to prune: `--set sparsity=0` trains the dense model as is
    return Pruning(cfg, select(trainer.model, cfg))
