"""Where HopfieldPooling looks in the MIL bags of ``specs/hopfield_mil.dsl``.

The numbers of docs/INSIGHT.md ("Hopfield retrieval"), from a trained run::

    dsl train specs/hopfield_mil.dsl --out runs/mil
    python -m benchmarks.mil_retrieval runs/mil

For every test bag it asks ``dsl explain``'s Hopfield report for the pooling
block's association weights over the bag's instances, recovers each instance's
digit by matching it against the test split of digits, and reports, per head,
how often the most weighted instance of a positive bag is the target digit and
how much weight the target digits get (against their share of the bag).
Not a timing benchmark: ``python -m benchmarks`` does not run it.
"""

from __future__ import annotations

import argparse
import sys

import torch

from dsl.cli.commands.explain import hopfield_report, load_run
from dsl.data.loaders import _digits_by_split  # the split the bags were drawn from


def bag_weights(report: dict, size: int) -> list[torch.Tensor]:
    """Per head, the association weight of each instance of the bag (padding excluded)."""
    block = next(b for b in report["blocks"].values() if b["block"] == "HopfieldPooling")
    out = []
    for head in block["retrieval"]:
        w = torch.zeros(size)
        for e in head[0]:
            w[e["pattern"]] = e["weight"]
        out.append(w)
    return out


def measure(run: str) -> dict[str, list[float] | int | float]:
    args = argparse.Namespace(run=run, spec=None, set=[], dim=[], device="cpu")
    ld = load_run(args)
    params = ld.prepared.cfg.source_params
    xs, ys = _digits_by_split(params.seed if params.seed is not None else ld.prepared.cfg.seed)["test"]
    top, mass, share, positives = [0, 0], [0.0, 0.0], 0.0, 0
    for i, (bag, label) in enumerate(ld.data.splits["test"]):
        if not label:
            continue
        digits = ys[torch.cdist(bag, xs).argmin(1)]
        is_target = digits == params.target
        for h, w in enumerate(bag_weights(hopfield_report(ld, "test", i, 1000), bag.shape[0])):
            top[h] += int(is_target[int(w.argmax())])
            mass[h] += float(w[is_target].sum())
        share += float(is_target.float().mean())
        positives += 1
    return {"positive_bags": positives, "top_is_target": top,
            "weight_on_target": [m / positives for m in mass], "target_share": share / positives}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mil_retrieval", description=__doc__)
    parser.add_argument("run", help="a run directory of specs/hopfield_mil.dsl")
    r = measure(parser.parse_args(argv).run)
    n = r["positive_bags"]
    for h, (t, m) in enumerate(zip(r["top_is_target"], r["weight_on_target"])):  # type: ignore[arg-type]
        print(f"head {h}: most weighted instance is the target digit in {t}/{n} positive test bags; "
              f"weight on target digits {m:.3f} (their share of the bag: {r['target_share']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
