"""``dsl explain RUN``: what a trained run's prototypes and Hopfield memories do.

* ``--prototypes``: for each prototype of each PrototypeHead, its class, the
  training example it was pushed onto (``prototypes.json``, when the run used
  ``push_every``) and its ``-k`` nearest training examples with their squared
  distances and classes; ``--png OUT`` draws those examples as images when the
  model input is image-shaped (``n*n`` features a row: digits are 8x8).
* ``--input ROW``: which prototypes the prediction for row ROW of the test
  split rests on: the top prototypes by similarity x last-layer weight for the
  predicted class (summed over all prototypes these are the head's logit: its
  last layer has no bias).
* ``--hopfield [--input ROW]``: for that sample (default row 0), for every
  Hopfield, HopfieldPooling and HopfieldLayer block, the stored patterns each
  query retrieves (the largest association weights, with pattern indices) and
  how many update steps ran.

Training examples are numbered in the training split's fixed order (see
``dsl.training.hooks.push.ordered_batches``); a graph's examples are its nodes.
The run's weights are ``model.safetensors`` (after the last push). Output is a
rich table, or JSON with ``--json``. Exit codes: 0, 1 (a run or model without
the blocks asked about, missing matplotlib), 2 (usage: ROW out of range, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any

from dsl.cli.main import device_name
from dsl.language.errors import RunError

NAME = "explain"
HELP = "show what a trained run's prototypes and Hopfield memories do"

HOPFIELD_KINDS = ("Hopfield", "HopfieldPooling", "HopfieldLayer")
#: Query rows a table shows per Hopfield block; --json has them all.
TABLE_QUERIES = 16


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (written by dsl train)")
    parser.add_argument("--prototypes", action="store_true", help="each prototype's nearest training examples")
    parser.add_argument("--input", type=int, default=None, metavar="ROW",
                        help="explain the prediction for this row of the test split")
    parser.add_argument("--hopfield", action="store_true",
                        help="stored patterns each query retrieves, per Hopfield block")
    parser.add_argument("-k", "--top", type=int, default=5, metavar="K",
                        help="nearest examples / prototypes / patterns to list (default 5)")
    parser.add_argument("--png", default=None, metavar="OUT",
                        help="with --prototypes: draw each prototype: a patch prototype as the boxed region of "
                             "the training image it came from, a vector prototype as its nearest examples "
                             "(needs matplotlib)")
    parser.add_argument("--split", default=None, help="split that --input indexes (default: test)")
    parser.add_argument("--spec", default=None, help="spec file (default: the run's own copy, spec.dsl)")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="override a param")
    parser.add_argument("--dim", action="append", default=[], metavar="N=34", help="bind a symbolic dim")
    parser.add_argument("--device", type=device_name, default="cpu", metavar="cpu|cuda|cuda:N",
                        help="where the model runs (as for eval and predict)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    from dsl.cli.training import _guarded

    return _guarded(_explain, args)


# --------------------------------------------------------------------------- loading


@dataclass
class Loaded:
    prepared: Any
    model: Any
    run: Any
    data: Any
    device: Any


def _usage(message: str) -> Exception:
    from dsl.cli.main import UsageError

    return UsageError(message)


def _problem(message: str) -> Exception:
    return RunError(message)


def load_run(args: argparse.Namespace) -> Loaded:
    """The run's model (``model.safetensors``, eval mode) and data; ``args`` as ``register`` defines
    them (``run``, ``spec``, ``set``, ``dim``, ``device``). Without ``--spec`` the spec is the run's own
    copy (``spec.dsl``): a path that ``meta.json`` names is never opened."""
    import torch

    from dsl.cli.main import parse_dims, parse_overrides
    from dsl.training.rundir import META_FILE, RunDir
    from dsl.training.session import load_data, load_trained

    if not os.path.isdir(args.run) or not RunDir(args.run).exists():
        raise _problem(f"{args.run} is not a run directory (no {META_FILE}); train one with `dsl train SPEC --out DIR`")
    p, model, _, run_dir = load_trained(args.run, args.spec, parse_overrides(args.set or []),
                                        parse_dims(args.dim or []))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _problem("--device cuda: no CUDA device is available")
    model.to(device).eval()
    data = load_data(p.cfg)
    return Loaded(p, model, run_dir, data, device)


def _split(args: argparse.Namespace, data: Any) -> str:
    known = ("train",) + tuple(data.eval_splits)
    if args.split is not None:
        if args.split not in known:
            raise _usage(f"--split {args.split}: this data has the splits {', '.join(known)}")
        return args.split
    return "test" if "test" in data.eval_splits else data.eval_splits[0]


# --------------------------------------------------------------------------- prototypes


def _labels(cfg: Any) -> Any:
    from dsl.training.hooks.push import LabelSource, label_source

    return label_source(cfg) or LabelSource("y", None, "data field")


def _capture(ld: Loaded, split: str, use_mask: bool) -> dict[str, Any]:
    from dsl.training.hooks.push import PushError, capture

    try:
        return capture(ld.model, ld.data, split, _labels(ld.prepared.cfg), ld.device, use_mask=use_mask)
    except PushError as exc:
        raise _problem(str(exc)) from None


def _pushed(ld: Loaded) -> dict[str, list[int]]:
    from dsl.training.hooks.push import read_prototypes

    doc = read_prototypes(ld.run) or {}
    return {name: [p["index"] for p in h["prototypes"]] for name, h in (doc.get("heads") or {}).items()}


def prototype_report(ld: Loaded, k: int, caps: dict[str, Any]) -> dict[str, Any]:
    """Per head, per prototype: class, pushed example, k nearest training examples.

    ``caps`` is what each head saw over the training split (``_capture(ld, "train", True)``)."""
    from dsl.training.hooks.push import named_heads

    heads = named_heads(ld.model)
    pushed = _pushed(ld)
    out: dict[str, Any] = {}
    for name, head in heads.items():
        cap = caps[name]
        onto = pushed.get(name, [])
        k_eff = min(k, int(cap.distances.shape[0]))
        dist, pos = cap.distances.topk(k_eff, dim=0, largest=False)  # [k, P]
        rows = []
        for j, cls in enumerate(head.prototype_class.tolist()):
            nearest = [
                {"index": int(cap.index[i]), "class": int(cap.labels[i]), "distance": float(d)}
                for d, i in zip(dist[:, j].tolist(), pos[:, j].tolist())
            ]
            own = sum(1 for n in nearest if n["class"] == cls)
            rows.append({
                "prototype": j,
                "class": cls,
                "pushed": onto[j] if j < len(onto) else None,
                "own_class_share": own / len(nearest) if nearest else math.nan,
                "nearest": nearest,
            })
        out[name] = {"examples": int(cap.distances.shape[0]), "prototypes": rows}
    return out


def _similarity(head: Any, d: Any) -> Any:
    from dsl.blocks.nn.prototype import log_similarity

    return log_similarity(d) if head.similarity == "log" else -d


def input_report(ld: Loaded, split: str, row: int, k: int) -> dict[str, Any]:
    """Per head: the predicted and true class of ``row`` and the prototypes the prediction rests on."""
    from dsl.training.hooks.push import named_heads

    heads = named_heads(ld.model)
    caps = _capture(ld, split, use_mask=False)
    pushed = _pushed(ld)
    out: dict[str, Any] = {}
    for name, head in heads.items():
        cap = caps[name]
        n = int(cap.z.shape[0])
        if not 0 <= row < n:
            raise _usage(f"--input {row}: the {split} split has {n} rows (0..{n - 1})")
        d = cap.distances[row]
        sim = _similarity(head, d)
        pred = int(cap.logits[row].argmax())
        weight = head.last_layer.weight.detach().cpu()[pred]
        contrib = sim * weight
        order = contrib.argsort(descending=True)[: max(1, k)].tolist()
        proto_class = head.prototype_class.tolist()
        names = pushed.get(name, [])
        out[name] = {
            "split": split,
            "row": row,
            "predicted": pred,
            "true": int(cap.labels[row]),
            "logit": float(cap.logits[row, pred]),
            "top": [
                {
                    "prototype": j,
                    "class": proto_class[j],
                    "distance": float(d[j]),
                    "similarity": float(sim[j]),
                    "weight": float(weight[j]),
                    "contribution": float(contrib[j]),
                    "pushed": names[j] if j < len(names) else None,
                }
                for j in order
            ],
        }
    return out


# --------------------------------------------------------------------------- png


def _image_field(inputs: dict[str, Any]) -> tuple[str, int]:
    """The model input to draw: rows of n*n features (``x`` preferred) and its side n."""
    for name in sorted(inputs, key=lambda f: f != "x"):
        width = int(inputs[name].shape[1])
        side = math.isqrt(width)
        if side >= 2 and side * side == width:
            return name, side
    have = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in inputs.items()) or "none aligned with the head's rows"
    raise _problem(f"--png needs an image-shaped model input (n*n features a row, digits: 64 = 8x8); inputs: {have}")


def write_png(report: dict[str, Any], caps: dict[str, Any], path: str) -> list[str]:
    """One grid per head: a row per prototype, its nearest training examples left to right."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise _problem("--png needs matplotlib: pip install 'dsl[plot]'") from None
    from dsl.training.rundir import atomic_write

    written = []
    for n, (name, rep) in enumerate(report.items()):
        cap = caps[name]
        field, side = _image_field(cap.inputs)
        where = {int(i): p for p, i in enumerate(cap.index.tolist())}
        protos = rep["prototypes"]
        cols = max(len(p["nearest"]) for p in protos)
        height = 1.35 * len(protos) + 0.8
        fig = Figure(figsize=(1.3 * cols + 0.8, height))
        axes = fig.subplots(len(protos), cols, squeeze=False)
        for r, p in enumerate(protos):
            for c, ax in enumerate(axes[r]):
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= len(p["nearest"]):
                    ax.set_axis_off()
                    continue
                ex = p["nearest"][c]
                img = cap.inputs[field][where[ex["index"]]].reshape(side, side).float().numpy()
                ax.imshow(img, cmap="gray_r")
                ok = "" if ex["class"] == p["class"] else " ✗"
                ax.set_title(f"#{ex['index']} c{ex['class']}{ok}\nd={ex['distance']:.3g}", fontsize=6)
            axes[r][0].set_ylabel(f"p{p['prototype']} (c{p['class']})", fontsize=7)
        fig.suptitle(f"{name}: nearest training examples of each prototype", fontsize=8, y=1 - 0.15 / height)
        # Fixed margins (tight_layout is slow on many small axes); room for the title on top.
        fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=0.98, bottom=0.02,
                            top=1 - 0.75 / height, hspace=0.55, wspace=0.15)
        out = path if n == 0 else _suffixed(path, name)
        atomic_write(out, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
        written.append(out)
    return written


def write_patch_png(ld: Loaded, path: str) -> dict[str, str]:
    """Per head on a feature map whose push recorded boxes: a PNG of each prototype as the training
    image it was pushed onto, in raw (unstandardised) pixels, with its patch's receptive field boxed.
    Returns the files written by head."""
    from dsl.tools.prototype_png import Tile, render
    from dsl.training.hooks.push import ordered_batches, read_prototypes
    from dsl.training.rundir import atomic_write

    doc = read_prototypes(ld.run) or {}
    heads = {name: h for name, h in (doc.get("heads") or {}).items() if h.get("input") and h["prototypes"]
             and "box" in h["prototypes"][0]}
    written: dict[str, str] = {}
    for n, (name, head) in enumerate(heads.items()):
        field = head["input"]
        rows = [batch[field] for batch in ordered_batches(ld.data, "train") if field in batch]
        if not rows:
            continue
        import torch

        images = torch.cat(rows)
        mean, std = (getattr(ld.data, "scaling", None) or {}).get(field, (None, None))
        if mean is not None:
            images = images * std + mean  # back to the pixels as they were read
        tiles = [Tile(images[p["index"]].numpy(), p["box"], f"p{p['prototype']} c{p['class']} #{p['index']}")
                 for p in head["prototypes"] if p["index"] >= 0 and p.get("box")]
        png = render(tiles, f"{name}: each prototype is the boxed patch of a training image (epoch {doc['epoch']})")
        out = path if n == 0 else _suffixed(path, name)

        def write(tmp: str, data: bytes = png) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)

        atomic_write(out, write)
        written[name] = out
    return written


def _suffixed(path: str, name: str) -> str:
    base, ext = os.path.splitext(path)
    return f"{base}-{name}{ext or '.png'}"


# --------------------------------------------------------------------------- hopfield


def hopfield_blocks(model: Any) -> dict[str, Any]:
    """The Hopfield-family blocks of ``model`` by module name; a pooling or layer block's inner
    Hopfield module is part of it, not a block of its own."""
    from dsl.blocks.nn.hopfield import Hopfield, HopfieldLayer, HopfieldPooling

    found: dict[str, Any] = {}
    for name, m in model.named_modules():
        if not isinstance(m, (Hopfield, HopfieldLayer, HopfieldPooling)):
            continue
        if any(name.startswith(outer + ".") for outer in found):
            continue
        found[name] = m
    return found


def _sample(ld: Loaded, split: str, row: int) -> tuple[dict[str, Any], int]:
    """The batch holding ``row`` of ``split`` and the row's position in it."""
    from dsl.training.hooks.push import ordered_batches
    from dsl.training.trainer import input_names

    offset = 0
    for batch in ordered_batches(ld.data, split):
        first = batch[input_names(ld.model)[0]]
        rows = int(first.shape[0]) if first.dim() else 1
        if row < offset + rows:
            return batch, row - offset
        offset += rows
    raise _usage(f"--input {row}: the {split} split has {offset} rows (0..{offset - 1})")


def _per_sample(kind: str, assoc: Any, x_shape: tuple[int, ...], local: int, rows: int) -> tuple[Any, bool]:
    """[heads, queries, patterns] for the sample; False when the block's batch is not the data's rows."""
    if kind == "HopfieldLayer":
        lead = x_shape[:-1]
        heads, patterns = assoc.shape[-2], assoc.shape[-1]
        aligned = len(lead) >= 1 and lead[0] == rows
        a = assoc[local if aligned else 0] if len(lead) >= 1 else assoc.unsqueeze(0)
        return a.reshape(-1, heads, patterns).transpose(0, 1), aligned
    aligned = assoc.shape[0] == rows
    return assoc[local if aligned else 0], aligned


def hopfield_report(ld: Loaded, split: str, row: int, k: int) -> dict[str, Any]:
    """Per Hopfield block: steps run and, per head and query, the top association weights."""
    import torch

    from dsl.training.trainer import input_names

    blocks = hopfield_blocks(ld.model)
    batch, local = _sample(ld, split, row)
    batch = {key: v.to(ld.device) for key, v in batch.items()}
    calls: dict[str, tuple[tuple, dict]] = {}

    def grab(name: str) -> Any:
        def hook(_m: Any, args: tuple, kwargs: dict) -> None:
            calls[name] = (args, kwargs)

        return hook

    handles = [m.register_forward_pre_hook(grab(n), with_kwargs=True) for n, m in blocks.items()]
    try:
        with torch.no_grad():
            names = input_names(ld.model)
            ld.model(**{key: batch[key] for key in names})
    finally:
        for h in handles:
            h.remove()
    rows = int(batch[names[0]].shape[0])
    out: dict[str, Any] = {}
    for name, m in blocks.items():
        if name not in calls:
            continue
        args, kwargs = calls[name]
        assoc = m.associations(*args, **kwargs).detach().cpu()  # also sets last_steps, as forward does
        kind = type(m).__name__
        inner = getattr(m, "hopfield", m)
        x = args[0] if args else next(iter(kwargs.values()))
        a, aligned = _per_sample(kind, assoc, tuple(x.shape), local, rows)
        out[name] = {
            "block": kind,
            "heads": int(a.shape[0]),
            "queries": int(a.shape[1]),
            "patterns": int(a.shape[2]),
            "beta": float(inner.beta),
            "steps": int(inner.steps),
            "steps_ran": int(m.last_steps),
            "sample_aligned": aligned,
            "retrieval": [
                [_top(a[h, q], k) for q in range(a.shape[1])] for h in range(a.shape[0])
            ],
        }
    return {"split": split, "row": row, "blocks": out}


def _top(weights: Any, k: int) -> list[dict[str, Any]]:
    """The k largest association weights (padded, zero-weight patterns left out)."""
    w, i = weights.topk(min(k, weights.numel()))
    return [{"pattern": int(j), "weight": float(v)} for v, j in zip(w.tolist(), i.tolist()) if v > 0]


# --------------------------------------------------------------------------- printing


def _print_prototypes(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    for name, rep in report.items():
        t = Table(title=f"prototypes of `{name}` · nearest of {rep['examples']} training examples")
        for col, just in (("proto", "right"), ("class", "right"), ("pushed onto", "right"),
                          ("own class", "right"), ("nearest examples: #index (class) distance", "left")):
            t.add_column(col, justify=just)
        for p in rep["prototypes"]:
            near = ", ".join(
                ("" if e["class"] == p["class"] else "[red]") + f"#{e['index']} ({e['class']}) {e['distance']:.3g}"
                + ("" if e["class"] == p["class"] else "[/red]")
                for e in p["nearest"]
            )
            pushed = "—" if p["pushed"] is None else f"#{p['pushed']}"
            t.add_row(str(p["prototype"]), str(p["class"]), pushed, f"{p['own_class_share']:.0%}", near)
        console.print(t)


def _print_input(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    for name, rep in report.items():
        verdict = "[green]correct[/green]" if rep["predicted"] == rep["true"] else "[red]wrong[/red]"
        t = Table(title=f"`{name}` on {rep['split']} row {rep['row']}: predicted class {rep['predicted']}, "
                        f"true class {rep['true']} ({verdict})")
        for col in ("proto", "class", "distance", "similarity", "weight", "sim × weight", "pushed onto"):
            t.add_column(col, justify="right")
        for p in rep["top"]:
            t.add_row(str(p["prototype"]), str(p["class"]), f"{p['distance']:.4g}", f"{p['similarity']:.4g}",
                      f"{p['weight']:.3g}", f"{p['contribution']:.4g}",
                      "—" if p["pushed"] is None else f"#{p['pushed']}")
        t.caption = f"logit of class {rep['predicted']} = {rep['logit']:.4g} = Σ over all prototypes of sim × weight"
        console.print(t)


def _print_hopfield(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    for name, b in report["blocks"].items():
        t = Table(title=f"{b['block']} `{name}` on {report['split']} row {report['row']}: "
                        f"{b['queries']} quer{'y' if b['queries'] == 1 else 'ies'} × {b['patterns']} stored patterns, "
                        f"β = {b['beta']:.3g}")
        t.add_column("head", justify="right")
        t.add_column("query", justify="right")
        t.add_column("top stored patterns: #index weight")
        shown = 0
        for h, queries in enumerate(b["retrieval"]):
            for q, top in enumerate(queries[:TABLE_QUERIES]):
                t.add_row(str(h), str(q), ", ".join(f"#{e['pattern']} {e['weight']:.3f}" for e in top))
                shown += 1
        hidden = b["heads"] * b["queries"] - shown
        notes = [f"update steps run: {b['steps_ran']} of at most {b['steps']}"
                 + (" (steps=0: one retrieval, attention)" if b["steps"] == 0 else "")]
        if hidden > 0:
            notes.append(f"{hidden} more query rows: use --json")
        if not b["sample_aligned"]:
            notes.append("this block's batch is not the data's rows: showing its first item")
        t.caption = "; ".join(notes)
        console.print(t)


# --------------------------------------------------------------------------- command


def _validate(args: argparse.Namespace) -> None:
    if args.png and not args.prototypes:
        raise _usage("--png draws the prototypes: add --prototypes")
    if not (args.prototypes or args.hopfield or args.input is not None):
        raise _usage("say what to explain: --prototypes, --input ROW and/or --hopfield")
    if args.top < 1:
        raise _usage(f"-k must be at least 1, got {args.top}")
    if args.input is not None and args.input < 0:
        raise _usage(f"--input must be a row number >= 0, got {args.input}")


def _explain(args: argparse.Namespace) -> int:
    _validate(args)
    ld = load_run(args)
    from dsl.training.hooks.push import named_heads

    wants_protos = args.prototypes or (args.input is not None and not args.hopfield)
    if wants_protos and not named_heads(ld.model):
        hint = " (it has Hopfield blocks: try --hopfield)" if hopfield_blocks(ld.model) else ""
        raise _problem(f"{args.run}: the model has no PrototypeHead{hint}")
    if args.hopfield and not hopfield_blocks(ld.model):
        raise _problem(f"{args.run}: the model has no Hopfield, HopfieldPooling or HopfieldLayer block")
    split = _split(args, ld.data)
    result: dict[str, Any] = {"run": args.run}
    if args.prototypes:
        caps = _capture(ld, "train", use_mask=True)
        result["prototypes"] = prototype_report(ld, args.top, caps)
        if args.png:
            patches = write_patch_png(ld, args.png)  # patch prototypes: the image regions they came from
            rest = {k: v for k, v in result["prototypes"].items() if k not in patches}
            result["png"] = list(patches.values()) + (write_png(rest, caps, _suffixed(args.png, "nearest")
                                                                if patches else args.png) if rest else [])
    if args.input is not None and (args.prototypes or not args.hopfield):
        result["input"] = input_report(ld, split, args.input, args.top)
    if args.hopfield:
        result["hopfield"] = hopfield_report(ld, split, args.input or 0, args.top)
    _emit(args, result)
    return 0


def _emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(result, indent=1))
        return
    from rich.console import Console

    console = Console(file=sys.stdout)
    if "prototypes" in result:
        _print_prototypes(console, result["prototypes"])
    if "input" in result:
        _print_input(console, result["input"])
    if "hopfield" in result:
        _print_hopfield(console, result["hopfield"])
    for path in result.get("png", []):
        console.print(f"wrote {path}")
