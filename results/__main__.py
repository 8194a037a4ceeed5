"""``python -m results [--seeds 0,1,2] [--only ID,...] [--quick] [--no-write] [--table]``."""

from __future__ import annotations

import argparse
import sys

from results.report import DOC, load_raw, mean_std, save_row, table, write_doc
from results.rows import ROWS, select
from results.run import QUICK_RUNS, RUNS, display_command, run_row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m results", description=__doc__)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--only", default=None, help="comma-separated row-id prefixes, e.g. gat,moe")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 1 epoch per training row, nothing written to docs/RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="do not rewrite docs/RESULTS.md")
    p.add_argument("--table", action="store_true", help="only rebuild the table from the saved raw results")
    p.add_argument("--list", action="store_true", help="list the rows and their commands")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for row in ROWS:
            print(f"{row.id:18} {display_command(row)}")
        return 0
    rows = select(args.only)
    if not rows:
        print(f"no row matches --only {args.only}; see --list", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"--seeds: expected integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    raw = {} if args.quick else load_raw()
    if not args.table:
        for row in rows:
            for seed in seeds:
                rec = run_row(row, seed, epochs=1 if args.quick else None, root=QUICK_RUNS if args.quick else RUNS)
                raw.setdefault(row.id, {})[str(seed)] = rec
                status = rec.get("error") or f"{rec['value']:.4f}"
                print(f"{row.id} seed {seed}: {status} ({rec['wall']:.0f} s)", flush=True)
                if not args.quick:
                    save_row(row.id, raw[row.id])
            values = [r["value"] for r in raw[row.id].values() if "error" not in r]
            if values:
                m, s = mean_std(values)
                print(f"{row.id}: {m:.4f} ± {s:.4f} over {len(values)} seeds", flush=True)
    if args.quick or args.no_write:
        print(table(raw))
    else:
        write_doc(load_raw())  # every saved row, also those another invocation ran
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
