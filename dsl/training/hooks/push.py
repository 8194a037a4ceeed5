"""The ProtoPNet push as a training hook: ``push_every = n`` in the ``train`` section.

ProtoPNet (Chen et al. 2019, reference code cfchen-duke/ProtoPNet) alternates
joint training with a *push*: every prototype is replaced by the nearest latent
embedding of a training example of its own class, so that each prototype *is*
a training example and can be shown as one ("this looks like that"). The paper
pushes at set epochs and then trains only the last layer for a few epochs.

What we do (decisions):

* Push after every ``n``-th epoch and after the last epoch (also after an
  early stop), so a finished run always ends on pushed prototypes. There is no
  separate last-layer-only stage: training simply continues with every
  parameter, and the ``l1_last_layer()`` loss term (if the loss names it)
  plays the role of the paper's last-layer sparsity. The cost of the final
  push is visible in ``metrics.jsonl`` (metrics before and after).
* Embeddings: a forward hook captures the input of every PrototypeHead over
  the whole training split, in eval mode, without autocast (float32: a pushed
  prototype equals the embedding bit for bit), in the data's fixed order
  (unshuffled), so the example index is stable.
* Class labels: the target of the first class-label term of the loss
  (``cross_entropy``, ``nll``, ``cluster_cost``, ``separation_cost``), else of
  the first ``accuracy`` metric, together with that term's ``mask=``. Taking
  them from the loss rather than a fixed data field ``y`` means the push uses
  exactly the rows and labels the model is trained on: on a graph
  (``mask=train_mask``) only training nodes can become prototypes.
* Best epoch: only weights whose prototypes are training patches may be
  chosen as the run's best (and so be what ``dsl eval``, ``predict``,
  ``export --best`` and the test split see): the epoch of a push, and the
  epochs after it that leave the prototypes as pushed (ProtoPNet's
  last-layer stage). Until the first push no epoch is selectable. An early stop
  (also inside a joint stage) pushes once more and offers those weights too.
* Record: after a push the epoch's evaluation is redone, so the metrics of
  the epoch describe the saved (pushed) weights; the record's ``push`` key
  holds the metrics before and after and, per head, the mean and largest L2
  distance the prototypes moved. ``prototypes.json`` in the run directory
  (written atomically) holds, for each prototype, its class and the index of
  the training example it was pushed onto (its row in the training split, or
  its node for a graph); the hook state keeps the same indices for resume.

The static check (``dsl check``) is :mod:`dsl.checking.train.push`; everything
that touches tensors imports torch lazily.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dsl.checking.train.push import LabelSource, label_source
from dsl.language.errors import RunError
from dsl.training.hooks import Hook

if TYPE_CHECKING:
    from torch import Tensor, nn

PROTOTYPES_FILE = "prototypes.json"


class PushError(RunError):
    """The push cannot run on this model or data; the message says why."""


# --------------------------------------------------------------------------- capturing embeddings


@dataclass
class Captured:
    """What one PrototypeHead saw over a split, row by row (rows kept by the mask only)."""

    z: Tensor  # [N, D] or [N, D, H, W]: the head's input
    logits: Tensor  # [N, classes] the head's logits
    distances: Tensor  # [N, P] squared distances to the prototypes
    labels: Tensor  # [N] class labels
    index: Tensor  # [N] the row's index in the split's fixed order (a node for a graph)
    inputs: dict[str, Tensor] = field(default_factory=dict)  # rank-2 model inputs of the same rows


def named_heads(model: nn.Module) -> dict[str, nn.Module]:
    """Every PrototypeHead in ``model`` by module name (``logits`` for a node named so)."""
    from dsl.blocks.nn.prototype import PrototypeHeadModule

    return {name or "head": m for name, m in model.named_modules() if isinstance(m, PrototypeHeadModule)}


def ordered_batches(data: Any, split: str) -> Iterator[dict[str, Tensor]]:
    """The split's batches in a fixed order: the training split unshuffled where the data allows.

    Rows are numbered in this order, so an index names the same example at
    every push and in ``dsl explain``. A single graph is one fixed batch; for
    data that is drawn afresh each epoch (episodes) the epoch-0 draw is used.
    """
    from dsl.data.base import ListDataset, TableDataset

    if split == "train" and isinstance(data, TableDataset):
        rows = data.splits["train"]
        n = data.num_items("train")
        for start in range(0, n, data.batch):
            yield {k: v[start : start + data.batch] for k, v in rows.items()}
    elif split == "train" and isinstance(data, ListDataset):
        items = data.splits["train"]
        for start in range(0, len(items), data.batch):
            yield data.collate(items[start : start + data.batch])
    else:
        yield from data.batches(split, 0)


def _rows_of(t: Any) -> int | None:
    return int(t.shape[0]) if hasattr(t, "shape") and t.dim() > 0 else None


def capture(
    model: nn.Module,
    data: Any,
    split: str,
    labels: LabelSource,
    device: Any = "cpu",
    use_mask: bool = True,
) -> dict[str, Captured]:
    """Run ``model`` over ``split`` in eval mode and collect every head's inputs and outputs.

    Labels (and the mask, when ``use_mask``) are looked up among the model's
    outputs first, then the batch's fields, as the trainer's loss does. The
    model's train/eval mode is restored afterwards.
    """
    import torch

    from dsl.training.trainer import input_names

    heads = named_heads(model)
    if not heads:
        raise PushError("the model has no PrototypeHead")
    seen: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    def grab(name: str) -> Any:
        def hook(_m: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
            z = args[0] if args else kwargs["z"]
            seen[name] = (z.detach(), out[0].detach(), out[1].detach())

        return hook

    parts: dict[str, dict[str, list[Tensor]]] = {n: {} for n in heads}
    handles = [m.register_forward_hook(grab(n), with_kwargs=True) for n, m in heads.items()]
    was_training = model.training
    model.eval()
    offset = 0
    try:
        with torch.no_grad():
            for batch in ordered_batches(data, split):
                batch = {k: v.to(device) for k, v in batch.items()}
                seen.clear()
                names = input_names(model)
                out = model(**{k: batch[k] for k in names})
                fields = dict(batch)
                fields.update(out if isinstance(out, dict) else {})
                rows = _collect_batch(seen, fields, labels, use_mask, offset, names, parts)
                offset += rows
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: _concat(p) for n, p in parts.items()}


def _lookup(fields: dict[str, Tensor], name: str, what: str) -> Tensor:
    if name not in fields:
        raise PushError(f"the {what} `{name}` is neither a model output nor a data field "
                        f"(have: {', '.join(sorted(fields))})")
    return fields[name]


def _collect_batch(
    seen: dict[str, tuple[Tensor, Tensor, Tensor]],
    fields: dict[str, Tensor],
    labels: LabelSource,
    use_mask: bool,
    offset: int,
    input_fields: list[str],
    parts: dict[str, dict[str, list[Tensor]]],
) -> int:
    """Append one batch's rows to ``parts``; return the number of head rows in the batch."""
    import torch

    y = _lookup(fields, labels.label, "label field")
    keep = _lookup(fields, labels.mask, "mask").bool() if (use_mask and labels.mask) else None
    rows = 0
    for name, part in parts.items():
        if name not in seen:
            raise PushError(f"the PrototypeHead `{name}` did not run on a batch of this data")
        z, logits, dist = seen[name]
        rows = int(z.shape[0])
        if _rows_of(y) != rows or (keep is not None and _rows_of(keep) != rows):
            raise PushError(
                f"the PrototypeHead `{name}` sees {rows} rows per batch but the labels `{labels.label}` "
                f"have {_rows_of(y)}: the push needs one label per embedding"
            )
        sel = torch.arange(rows, device=z.device) if keep is None else keep.nonzero().flatten()
        cols = {"z": z, "logits": logits, "distances": dist, "labels": y.long()}
        for k, v in cols.items():
            part.setdefault(k, []).append(v[sel].cpu())
        part.setdefault("index", []).append((sel + offset).cpu())
        for f in input_fields:
            t = fields[f]
            if t.dim() == 2 and t.shape[0] == rows:
                part.setdefault("in:" + f, []).append(t[sel].cpu())
    return rows


def _concat(part: dict[str, list[Tensor]]) -> Captured:
    import torch

    cat = {k: torch.cat(v) for k, v in part.items()}
    inputs = {k[3:]: v for k, v in cat.items() if k.startswith("in:")}
    return Captured(cat["z"], cat["logits"], cat["distances"], cat["labels"], cat["index"], inputs)


# --------------------------------------------------------------------------- the push


@dataclass
class HeadPush:
    """The result of pushing one head: per prototype its class, example index and distance moved."""

    classes: list[int]
    index: list[int]  # -1: the class had no training example, the prototype stayed
    moved: list[float]
    position: list[list[int]] = field(default_factory=list)  # per prototype: its patch's (h, w) on a feature map
    box: list[list[int]] = field(default_factory=list)  # per prototype: [top, bottom, left, right) in the input
    input: str | None = None  # the model input the boxes lie in

    def summary(self) -> dict[str, Any]:
        moved = [m for m, i in zip(self.moved, self.index) if i >= 0]
        return {
            "moved_mean": sum(moved) / len(moved) if moved else 0.0,
            "moved_max": max(moved) if moved else 0.0,
            "unpushed": sum(1 for i in self.index if i < 0),
        }


def push_model(model: nn.Module, data: Any, labels: LabelSource, device: Any = "cpu",
               fields: dict[str, Any] | None = None) -> dict[str, HeadPush]:
    """Push every PrototypeHead of ``model`` onto the training split; return what moved where.

    For a head on a feature map, each prototype's patch position is kept, and with its
    receptive field (``fields``, by head) the box of input pixels the patch sees."""
    import torch

    from dsl.blocks.nn.prototype import push_prototypes

    heads = named_heads(model)
    caps = capture(model, data, "train", labels, device)
    result: dict[str, HeadPush] = {}
    for name, head in heads.items():
        cap = caps[name]
        before = head.prototypes.detach().clone()
        local, position = push_prototypes(head, cap.z.to(before.device), cap.labels)
        found = local >= 0
        index = torch.where(found.cpu(), cap.index[local.clamp_min(0).cpu()], -1)
        moved = (head.prototypes.detach() - before).norm(dim=1)
        pushed = HeadPush(head.prototype_class.tolist(), index.tolist(), moved.tolist())
        if cap.z.dim() > 2:
            _place(pushed, position.tolist(), tuple(cap.z.shape[2:]), (fields or {}).get(name), data)
        result[name] = pushed
    return result


def _place(pushed: HeadPush, flat: list[int], grid: tuple[int, ...], field: Any, data: Any) -> None:
    """Each prototype's patch position on the ``grid`` and, with a receptive field, its box in the input."""
    for p in flat:
        pos, rest = [], p
        for size in reversed(grid):
            pos.append(rest % size if p >= 0 else -1)
            rest //= size
        pushed.position.append(pos[::-1])
    if field is None:
        return
    example = data.example().get(field.input) if hasattr(data, "example") else None
    if example is None or example.dim() != len(grid) + 2:
        return
    lengths = tuple(int(n) for n in example.shape[2:])
    pushed.input = field.input
    for pos in pushed.position:
        box = field.box(tuple(pos), lengths) if min(pos) >= 0 else []
        pushed.box.append([x for pair in box for x in pair])


def _broadcast(model: nn.Module) -> None:
    """Keep the ranks identical: rank 0's pushed prototypes win (they agree bit for bit on CPU)."""
    import torch.distributed as dist

    for head in named_heads(model).values():
        dist.broadcast(head.prototypes.data, 0)


def prototypes_json(epoch: int, labels: LabelSource, pushes: dict[str, HeadPush]) -> dict[str, Any]:
    """The content of ``prototypes.json``."""
    heads = {}
    for name, p in pushes.items():
        heads[name] = {
            "prototypes": [
                {"prototype": j, "class": c, "index": i, "moved": m,
                 **({"position": p.position[j]} if p.position else {}),
                 **({"box": p.box[j]} if p.box else {})}
                for j, (c, i, m) in enumerate(zip(p.classes, p.index, p.moved))
            ],
            **({"input": p.input} if p.input else {}),
            **p.summary(),
        }
    return {"epoch": epoch, "split": "train", "label": labels.label, "mask": labels.mask, "heads": heads}


class PushHook(Hook):
    """Runs the push every ``cfg.push_every`` epochs and at the end; see the module docstring."""

    name = "push"

    def __init__(self, every: int | None, labels: LabelSource, epochs: list[int] | None = None):
        self.every = every
        self.epochs = epochs  # with `stages`: the run's epochs after which the joint stage pushes
        self.labels = labels
        self.last_push = 0  # the epoch (1-based) of the last push; 0 = none yet
        self.count = 0
        self.index: dict[str, Any] = {}  # head name -> LongTensor [P] of example indices
        self.pushed: dict[str, Any] = {}  # head name -> its prototypes as the last push left them

    def _due(self, trainer: Any) -> bool:
        epoch = trainer.epoch
        if self.epochs is not None:
            return epoch in self.epochs and epoch != self.last_push
        assert self.every is not None
        return epoch != self.last_push and (epoch % self.every == 0 or epoch >= trainer.cfg.epochs)

    def push(self, trainer: Any, record: dict[str, Any]) -> None:
        """Push, re-evaluate, and note it all in ``record`` and ``prototypes.json``."""
        import torch

        pushes = push_model(trainer.model, trainer.data, self.labels, trainer.device, trainer.cfg.push_fields)
        if trainer.world > 1:
            _broadcast(trainer.model)
        before = {s: record[s] for s in trainer.data.eval_splits if s in record}
        after = {s: trainer.evaluate(s) for s in before}
        record.update(after)
        record["push"] = {
            "heads": {n: p.summary() for n, p in pushes.items()},
            "before": before,
            "after": after,
        }
        self.last_push, self.count = trainer.epoch, self.count + 1
        self.index = {n: torch.tensor(p.index, dtype=torch.long) for n, p in pushes.items()}
        self.pushed = _prototypes(trainer.model)
        if trainer.run is not None:
            from dsl.training.rundir import atomic_text

            doc = prototypes_json(trainer.epoch, self.labels, pushes)
            atomic_text(trainer.run.file(PROTOTYPES_FILE), json.dumps(doc, indent=1) + "\n")

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if self._due(trainer):
            self.push(trainer, record)

    def selectable(self, trainer: Any, record: dict[str, Any]) -> bool:
        return "push" in record or self._as_pushed(trainer.model)

    def _as_pushed(self, model: nn.Module) -> bool:
        """Whether the prototypes are still those the last push left (the last-layer stage)."""
        if not self.pushed:
            return False
        now = _prototypes(model)
        return now.keys() == self.pushed.keys() and all(now[n].equal(p) for n, p in self.pushed.items())

    def on_fit_end(self, trainer: Any) -> None:
        # An early stop ends the run before its last epoch (or a joint stage before its end): push
        # once more so the final weights hold real examples, rewrite that epoch's record and
        # checkpoint, and offer the pushed weights as the run's best.
        if not trainer.stopped or not trainer.history or self._as_pushed(trainer.model):
            return
        record = trainer.history[-1]
        self.push(trainer, record)
        if trainer.run is not None:
            trainer.run.truncate_metrics(trainer.epoch - 1)
            trainer.run.append_metrics(record)
        trainer.reconsider_best(record)
        trainer.checkpoint()

    def summary(self, trainer: Any) -> list[str]:
        """One line for the end of ``dsl train``: how many pushes, and what the last one did."""
        last = next((r for r in reversed(trainer.history) if "push" in r), None)
        if last is None:
            return []
        moved = ", ".join(f"{n} moved {h['moved_mean']:.3g} on average" for n, h in last["push"]["heads"].items())
        where = f"; {PROTOTYPES_FILE} in the run directory" if trainer.run is not None else ""
        return [f"prototypes pushed {self.count} time(s), last after epoch {last['epoch']}: {moved}{where}"]

    def state_dict(self) -> dict[str, Any]:
        return {"last_push": self.last_push, "count": self.count, "index": dict(self.index),
                "pushed": dict(self.pushed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        from dsl.training.rundir import INVALID

        index, pushed = state.get("index") or {}, state.get("pushed") or {}
        for name, value in (("index", index), ("pushed", pushed)):
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in value.items()):
                raise RunError(f"the checkpoint's push state has a `{name}` of the wrong type: it is not a dsl "
                               "checkpoint", INVALID)
        self.last_push = int(state.get("last_push", 0))
        self.count = int(state.get("count", 0))
        self.index, self.pushed = dict(index), dict(pushed)


def _prototypes(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of every head's prototypes, by head name."""
    return {n: h.prototypes.detach().to("cpu", copy=True) for n, h in named_heads(model).items()}


def make(trainer: Any) -> PushHook | None:
    every = getattr(trainer.cfg, "push_every", None)
    epochs = trainer.cfg.push_epochs()
    if not every and not epochs:
        return None
    if not named_heads(trainer.model):
        raise PushError("push_every is set but the model has no PrototypeHead")
    labels = label_source(trainer.cfg)
    if labels is None:
        raise PushError("push_every needs class labels: name them in a cross_entropy term of the loss")
    return PushHook(int(every) if every else None, labels, epochs)


def read_prototypes(run: Any) -> dict[str, Any] | None:
    """``prototypes.json`` of a run directory, or None when the run never pushed (RunError, E0704,
    when it is not what :func:`prototypes_json` writes: the directory is untrusted)."""
    from dsl.training.rundir import INVALID, MAX_RECORDS_BYTES

    try:
        doc = run.read_json(PROTOTYPES_FILE, MAX_RECORDS_BYTES)
    except FileNotFoundError:
        return None
    heads = doc.get("heads") if isinstance(doc, dict) else None
    ok = isinstance(heads, dict) and all(
        isinstance(h, dict) and isinstance(h.get("prototypes"), list)
        and all(isinstance(p, dict) and type(p.get("index")) is int for p in h["prototypes"])
        for h in heads.values())
    if not ok:
        path = run.file(PROTOTYPES_FILE)
        raise RunError(f"{path} is not a run's record of pushed prototypes", INVALID, path)
    return doc

