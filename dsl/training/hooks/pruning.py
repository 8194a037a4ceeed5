"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

``prune = magnitude(sparsity=0.9, start=0, end=30, every=1, layers=[h, logits])``
in the ``train`` section prunes the weights of the named layers (default: every
weight of the model) along the paper's cubic schedule::

    s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n Δt))^3      t ∈ {t0, t0 + Δt, ..., t0 + n Δt}

with s_f = ``sparsity`` (or a layer's own: ``layers=[h, logits(sparsity=0.5)]``),
s_i = ``initial`` (default 0), t0 = ``start``, t0 + n Δt = ``end`` and Δt = ``every``.
**t counts finished epochs** (the loop's unit everywhere else: schedules, early
stopping, resume): the step for t runs after epoch t (t = 0: before the first
epoch), so the weights that epoch t+1 trains and the checkpoint of epoch t carry
sparsity s_t. ``end`` is always a pruning step, even when ``end - start`` is not a
multiple of ``every``; after ``end`` training goes on at s_f (the paper's
recovery). A run that stops before ``end`` keeps the last target it reached, and
reports it.

*What is a weight* (:func:`kind`): every parameter of two or more dims that torch
names a weight (``weight``, ``weight_*``, ``*_weight``): Linear maps (torch's and
PyG's, so GAT's projections), conv kernels, LSTM/GRU matrices (``weight_ih_l0``,
``weight_hh_l0``), MultiheadAttention's ``in_proj_weight`` and ``out_proj.weight``,
Hopfield's projections, MoE experts. Embedding tables (``embeddings=true``) and
learned prototypes (``prototypes=true``: the parameters a module lists in
``prototype_parameters``) only when asked. Biases, norms, GAT's attention vectors,
routers, the spec's own ``Parameter(...)`` tensors and weights shared by several
modules (``tie=``) stay dense. The blocks declare the same kinds statically
(``Decl.prunable``), so ``dsl check`` refuses a named layer with nothing to prune.

Each step prunes, per weight (``scope="layer"``, the paper's choice), the
smallest-magnitude entries among those still alive until round(s_t · n) of its n
entries are masked; ``scope="global"`` ranks all the selected weights together
instead. Masks only grow, so a pruned weight stays pruned. The masks are
``torch.nn.utils.prune`` reparametrisations (weight = weight_orig · weight_mask,
so a pruned weight gets no gradient), made permanent with ``prune.remove`` at
the end of ``fit``.

Checkpoints keep the plain keys: a state-dict hook on each pruned module writes
``weight`` = weight_orig · weight_mask (exact zeros) instead of the two
reparametrisation tensors, so ``model.safetensors`` loads into the plain model
that ``dsl eval``/``predict`` build. The masks (bool tensors) are the hook's
checkpointed state; ``--resume`` re-attaches them before training on.

``layers`` names what the model assigns (``h``, ``logits``, ``z``): a name
selects every weight inside the blocks called by the statements that assign it
(nested calls and ``repeat`` copies included) and inside the block instance it
binds (``emb = Embedding(...)``); ``dsl check`` finds those modules
(:func:`dsl.checking.train.prune.check_prune`) and the hook prunes them. Each epoch record gets
``"pruning": {"target", "sparsity", "weights", "nonzero", "layers": {parameter: sparsity}}``
(``target``: the schedule of ``sparsity``; a parameter is named as in the state dict).

The spec side (:mod:`dsl.checking.train.prune`) is pure Python; torch is imported only by the hook.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dsl.checking.train.prune import Prune
from dsl.language.errors import RunError
from dsl.language.registry import EMBEDDINGS, PROTOTYPES, WEIGHTS
from dsl.training.hooks import Hook

# --------------------------------------------------------------------------- what is pruned (torch)


def kind(module: Any, name: str, param: Any) -> str | None:
    """What pruning calls ``module``'s parameter ``name``: WEIGHTS, EMBEDDINGS, PROTOTYPES, or None (dense)."""
    from torch import fx, nn

    if isinstance(module, fx.GraphModule):
        return None  # the spec's own tensors (`pos = Parameter(...)`): no layer's weight
    if name in getattr(module, "prototype_parameters", ()):
        return PROTOTYPES
    if param.dim() < 2 or not (name == "weight" or name.startswith("weight_") or name.endswith("_weight")):
        return None  # biases, norms' scales, GAT's attention vectors, a router's w_gate
    return EMBEDDINGS if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) else WEIGHTS


@dataclass(frozen=True)
class Target:
    """One pruned parameter."""

    path: str  # its state-dict name: `logits.weight`, `h.rnn.weight_ih_l0`
    module: Any
    name: str  # its name on the module: `weight`, `weight_ih_l0`
    final: float  # its final sparsity s_f
    reader: Any = None  # a module that reads the weight without calling ``module`` (see _readers)


def _weights(root: Any, prefix: str, kinds: frozenset[str], shared: set[int]) -> Iterator[tuple[str, Any, str]]:
    """(path, module, name) of every parameter under ``root`` that pruning masks."""
    for path, m in root.named_modules(prefix=prefix):
        for name, param in m.named_parameters(recurse=False):
            if id(param) not in shared and kind(m, name, param) in kinds:
                yield (f"{path}.{name}" if path else name), m, name


def _readers(model: Any) -> dict[int, Any]:
    """Modules whose weights their parent reads directly, by id, with that parent.

    A pruned weight is recomputed (orig · mask) by a forward pre-hook of its module, and
    nn.MultiheadAttention uses ``out_proj.weight`` without calling ``out_proj``: the
    attention's own forward must recompute it, or every step would reuse the first one.
    """
    from torch import nn

    return {id(m.out_proj): m for m in model.modules() if isinstance(m, nn.MultiheadAttention)}


def select(model: Any, cfg: Prune) -> list[Target]:
    """Every parameter the config prunes, each once, with its final sparsity."""
    holders = Counter(id(p) for m in model.modules() for _, p in m.named_parameters(recurse=False))
    shared = {k for k, n in holders.items() if n > 1}  # tied: masking it through one holder would not mask the other
    kinds, readers = cfg.kinds, _readers(model)
    if not cfg.layers:
        return [Target(path, m, name, cfg.final(None), readers.get(id(m)))
                for path, m, name in _weights(model, "", kinds, shared)]
    chosen: dict[tuple[int, str], Target] = {}
    for layer in cfg.layers:
        before = len(chosen)
        for module in cfg.modules.get(layer.name, ()):
            for path, m, name in _weights(model.get_submodule(module), module, kinds, shared):
                chosen.setdefault((id(m), name), Target(path, m, name, cfg.final(layer), readers.get(id(m))))
        if len(chosen) == before:  # `dsl check` says so first for every block that declares what it holds
            raise RunError(f"prune: layer `{layer.name}` has no weights to prune (or shares them with a layer named before)")
    return list(chosen.values())


def _plain_weights(names: tuple[str, ...]) -> Any:
    """state_dict post-hook: ``name`` = name_orig · name_mask instead of the two tensors."""

    def hook(module: Any, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
        for name in names:
            state_dict.pop(prefix + name + "_orig", None)
            state_dict.pop(prefix + name + "_mask", None)
            # From the module's tensors, not the attribute: PyG's Linear saves its `weight`
            # attribute itself, as the last forward left it (before the last optimizer step).
            state_dict[prefix + name] = (getattr(module, name + "_orig") * getattr(module, name + "_mask")).detach()

    return hook


def _masked_before_read(module: Any, name: str) -> Any:
    """Forward pre-hook for a :attr:`Target.reader`: recompute the weight as torch's pruning hook does."""

    def hook(reader: Any, args: Any) -> None:
        setattr(module, name, getattr(module, name + "_orig") * getattr(module, name + "_mask"))

    return hook


def _load_plain_weights(names: tuple[str, ...]) -> Any:
    """load_state_dict pre-hook: a plain ``name`` loads into name_orig, keeping the current mask."""

    def hook(module: Any, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        for name in names:
            if prefix + name in state_dict and prefix + name + "_orig" not in state_dict:
                state_dict[prefix + name + "_orig"] = state_dict.pop(prefix + name)
                state_dict[prefix + name + "_mask"] = getattr(module, name + "_mask")

    return hook


class Pruning(Hook):
    """Applies the schedule after each epoch; keeps the masks as checkpointed state."""

    name = "pruning"

    def __init__(self, cfg: Prune, targets: list[Target]):
        self.cfg = cfg
        self.targets = targets
        self.masks: dict[str, Any] = {}  # path -> bool mask on the CPU: the state resume restores
        self.handles: list[Any] = []

    # -- reparametrisation
    @property
    def attached(self) -> bool:
        return bool(self.handles)

    def attach(self) -> None:
        """Put the masks (all ones for a weight not pruned yet) on every target."""
        import torch
        from torch.nn.utils import prune

        names: dict[int, tuple[Any, tuple[str, ...]]] = {}  # one pair of state-dict hooks per module
        for t in self.targets:
            weight = getattr(t.module, t.name)
            mask = self.masks.get(t.path)
            mask = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask.to(weight.device)
            prune.custom_from_mask(t.module, t.name, mask)
            if t.reader is not None:
                self.handles.append(t.reader.register_forward_pre_hook(_masked_before_read(t.module, t.name)))
            m, done = names.get(id(t.module), (t.module, ()))
            names[id(t.module)] = (m, (*done, t.name))
        for m, pruned in names.values():
            self.handles.append(m.register_state_dict_post_hook(_plain_weights(pruned)))
            self.handles.append(m.register_load_state_dict_pre_hook(_load_plain_weights(pruned)))

    def detach(self) -> None:
        """Make the masks permanent (``prune.remove``): plain weights with exact zeros."""
        from torch.nn.utils import prune

        for h in self.handles:
            h.remove()
        self.handles = []
        for t in self.targets:
            if hasattr(t.module, t.name + "_mask"):
                prune.remove(t.module, t.name)

    # -- schedule
    def prune_to(self, t: int) -> None:
        """Mask the smallest live entries until the schedule's share at ``t`` is masked (per weight or globally)."""
        from torch.nn.utils import prune

        def mask(x: Target) -> Any:
            return getattr(x.module, x.name + "_mask")

        if self.cfg.args.scope == "layer":
            for x in self.targets:
                want = round(self.cfg.scheduled(t, x.final) * mask(x).numel())
                have = int((mask(x) == 0).sum())
                if want > have:
                    prune.l1_unstructured(x.module, x.name, amount=want - have)
        else:  # one final sparsity for all (resolve_prune refuses a sparsity per layer here)
            total = sum(mask(x).numel() for x in self.targets)
            have = sum(int((mask(x) == 0).sum()) for x in self.targets)
            want = round(self.cfg.scheduled(t) * total)
            if want > have:
                prune.global_unstructured([(x.module, x.name) for x in self.targets],
                                          pruning_method=prune.L1Unstructured, amount=want - have)
        self.masks = {x.path: mask(x).detach().to("cpu").bool() for x in self.targets}

    def report(self) -> dict[str, Any]:
        """Sparsity per pruned weight and over all of them, from the masks."""
        layers: dict[str, float] = {}
        total = zeros = 0
        for x in self.targets:
            mask = self.masks.get(x.path)
            n = getattr(x.module, x.name).numel()
            z = int((~mask).sum()) if mask is not None else 0
            layers[x.path] = round(z / n, 6)
            total, zeros = total + n, zeros + z
        return {"sparsity": round(zeros / total, 6) if total else 0.0, "weights": total, "nonzero": total - zeros,
                "layers": layers}

    # -- hook points
    def on_fit_start(self, trainer: Any) -> None:
        if not self.attached:
            self.attach()
        self.prune_to(trainer.epoch)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.prune_to(trainer.epoch)
        record["pruning"] = {"target": round(self.cfg.scheduled(trainer.epoch), 6), **self.report()}

    def on_fit_end(self, trainer: Any) -> None:
        self.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = dict(state.get("masks") or {})
        if self.attached:  # re-put the restored masks on the weights
            self.detach()
            self.attach()

    def summary(self, trainer: Any) -> list[Any]:
        """The final sparsity per weight, for the end of ``dsl train``."""
        last = trainer.history[-1] if trainer.history else {}
        uniform = all(x.sparsity is None for x in self.cfg.layers)  # else each weight has its own target
        return [sparsity_table(last["pruning"], self.cfg.args.sparsity if uniform else None)] if "pruning" in last else []


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
    if cfg is None or not cfg.active:
        return None  # nothing to prune: `--set sparsity=0` trains the dense model as is
    return Pruning(cfg, select(trainer.model, cfg))
