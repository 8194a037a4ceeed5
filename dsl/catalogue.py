"""`dsl blocks`: the block catalogue, generated from the registry."""

from __future__ import annotations

import json
import sys
from typing import Any

from . import registry
from .diagnostics import did_you_mean


def _field_rows(decl: registry.Decl) -> list[dict[str, Any]]:
    rows = []
    for name, f in decl.params.model_fields.items():
        ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        default = "required" if f.is_required() else repr(f.default)
        rows.append({"name": name, "type": ann, "default": default, "doc": f.description or ""})
    return rows


def describe(decl: registry.Decl) -> dict[str, Any]:
    inputs = [
        {"name": a.name, "optional": a.optional, "doc": a.doc, "variadic": a.variadic} for a in decl.inputs
    ]
    return {
        "name": decl.name,
        "kind": decl.kind,
        "signature": decl.signature,
        "inputs": inputs,
        "outputs": list(decl.outputs),
        "params": _field_rows(decl),
        "aux_losses": [a.output for a in decl.aux],
        "doc": decl.doc.strip(),
        "paper": decl.paper,
        "source": decl.source,
    }


def show_blocks(name: str | None, as_json: bool) -> int:
    table = registry.load()
    if name is not None and name not in table:
        hint = did_you_mean(name, table) or "run `dsl blocks` for the list"
        print(f"error: no block or function `{name}`; {hint}", file=sys.stderr)
        return 1
    decls = [table[name]] if name else [table[k] for k in sorted(table, key=lambda n: (n[0].islower(), n))]
    if as_json:
        print(json.dumps([describe(d) for d in decls], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if name is None:
        t = Table(title="blocks and functions")
        t.add_column("name", style="bold")
        t.add_column("kind")
        t.add_column("shapes")
        t.add_column("summary")
        for d in decls:
            first = d.doc.strip().splitlines()[0] if d.doc.strip() else ""
            t.add_row(d.name, d.kind, d.signature, first)
        console.print(t)
        return 0
    d = describe(decls[0])
    console.print(f"[bold]{d['name']}[/bold] ({d['kind']})  {d['signature']}")
    ins = ", ".join(a["name"] + ("=..." if a["optional"] else "") for a in d["inputs"])
    console.print(f"inputs: {ins}    outputs: {', '.join(d['outputs'])}")
    if d["params"]:
        t = Table(title="hyperparameters")
        for col in ("name", "type", "default", "doc"):
            t.add_column(col)
        for r in d["params"]:
            t.add_row(r["name"], r["type"], r["default"], r["doc"])
        console.print(t)
    if d["aux_losses"]:
        console.print(f"auxiliary losses: {', '.join(d['aux_losses'])}")
    console.print(d["doc"], markup=False, highlight=False)
    return 0
