"""The `dsl compile` summary: one row per node with its block, output shape and parameters."""

from __future__ import annotations

from typing import Any

from dsl.checking.program import Program, describe_params


def _new_weights(owner: Any, seen: set[int]) -> int:
    """Elements of the weights of ``owner`` (a module or a learned tensor) not counted before:
    a weight shared with an earlier row (``tie=``) counts once."""
    weights = [owner] if not hasattr(owner, "parameters") else list(owner.parameters())
    total = 0
    for w in weights:
        if id(w) not in seen:
            seen.add(id(w))
            total += w.numel()
    return total


def summary_rows(prog: Program, model: Any) -> dict[str, Any]:
    rows = []
    counted: set[str] = set()
    seen: set[int] = set()
    for node in prog.nodes:
        shapes = ", ".join(str(prog.env.resolve_type(t)) for t in node.types)
        params = 0
        shared = False
        if node.module is not None:
            if node.module in counted:
                shared = True
            else:
                counted.add(node.module)
                params = _new_weights(getattr(model, node.module), seen)
        op = node.op if node.kind != "input" else "input"
        args = describe_params(node.params)
        rows.append({
            "node": node.name,
            "block": f"{op}({args})" if args else op,
            "shape": shapes,
            "params": params,
            "shared": shared,
            "line": node.span.line,
        })
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "model": prog.name,
        "nodes": rows,
        "outputs": {k: str(v) for k, v in prog.output_types().items()},
        "parameters": total,
        "trainable": trainable,
        "aux_losses": [{"name": a.key, "weight": a.weight} for a in prog.aux],
    }


def print_summary(prog: Program, model: Any, file: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    data = summary_rows(prog, model)
    table = Table(title=f"{data['model']}", show_lines=False)
    table.add_column("node", style="bold")
    table.add_column("block")
    table.add_column("output shape")
    table.add_column("parameters", justify="right")
    for r in data["nodes"]:
        params = "shared" if r["shared"] else (f"{r['params']:,}" if r["params"] else "")
        table.add_row(r["node"], r["block"], r["shape"], params)
    table.add_section()
    table.add_row("total", "", "", f"{data['parameters']:,}")
    if data["trainable"] != data["parameters"]:
        table.add_row("trainable", "", "", f"{data['trainable']:,}")
    handle = open(file, "w", encoding="utf-8") if file else None
    try:
        console = Console(file=handle, width=120 if handle else None)
        console.print(table)
        outs = ", ".join(f"{k}: {v}" for k, v in data["outputs"].items())
        console.print(f"outputs: {outs}")
        if data["aux_losses"]:
            aux = ", ".join(f"{a['name']} (x{a['weight']:g})" for a in data["aux_losses"])
            console.print(f"auxiliary losses (added to the training loss): {aux}")
    finally:
        if handle:
            handle.close()
