"""`dsl blocks`: the block catalogue, generated from the registry.

The same data writes the reference page ``docs/BLOCKS.md``::

    python -m dsl.tools.catalogue -o docs/BLOCKS.md     # regenerate
    python -m dsl.tools.catalogue --check docs/BLOCKS.md  # exit 1 when it is stale

so the documentation never drifts from the code (a test runs the check).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from dsl.language import registry
from dsl.language.diagnostics import did_you_mean
from dsl.language.files import atomic_text


def spell(value: Any) -> str:
    """A default as a spec writes it: ``true``, ``null``, ``"gelu"``, ``[1, 2]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(spell(v) for v in value) + "]"
    if isinstance(value, registry.BlockValue):
        return value.describe()
    return repr(value)


def _type_text(annotation: Any) -> str:
    """A type as a spec writer reads it: ``int | null``, ``"topk" | "switch"``."""
    import types
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # constraints (min_length=1) are for the checker: the type is the first arg
        return _type_text(args[0])
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(spell(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin in (list, tuple):
        inner = ", ".join(_type_text(a) for a in args if a is not Ellipsis)
        return f"list[{inner}]" if inner else "list"
    if isinstance(annotation, type) and issubclass(annotation, registry.BlockValue):
        return "block value"
    name = getattr(annotation, "__name__", None)
    return name if isinstance(name, str) else str(annotation).replace("typing.", "")


def field_rows(params: type[BaseModel]) -> list[dict[str, Any]]:
    """Name, type, default (or "required") and doc of each field of a pydantic model."""
    rows = []
    for name, f in params.model_fields.items():
        ann = _type_text(f.annotation)
        default = "required" if f.is_required() else spell(f.default)
        rows.append({"name": name, "type": ann, "default": default, "doc": f.description or ""})
    return rows


def _field_rows(decl: registry.Decl) -> list[dict[str, Any]]:
    return field_rows(decl.params)


def describe(decl: registry.Decl) -> dict[str, Any]:
    inputs = [
        {"name": a.name, "optional": a.optional, "doc": a.doc, "variadic": a.variadic}
        for a in decl.inputs
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
    decls = (
        [table[name]]
        if name
        else [table[k] for k in sorted(table, key=lambda n: (n[0].islower(), n))]
    )
    if as_json:
        print(json.dumps([describe(d) for d in decls], indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape
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
            t.add_row(*(escape(c) for c in (d.name, d.kind, d.signature, first)))
        console.print(t)
        return 0
    d = describe(decls[0])
    console.print(f"[bold]{escape(d['name'])}[/bold] ({d['kind']})  {escape(d['signature'])}")
    ins = ", ".join(a["name"] + ("=..." if a["optional"] else "") for a in d["inputs"])
    console.print(f"inputs: {ins}    outputs: {', '.join(d['outputs'])}")
    if d["params"]:
        t = Table(title="hyperparameters")
        for col in ("name", "type", "default", "doc"):
            t.add_column(col)
        for r in d["params"]:
            t.add_row(*(escape(r[c]) for c in ("name", "type", "default", "doc")))  # list[int] is no markup
        console.print(t)
    if d["aux_losses"]:
        console.print(f"auxiliary losses: {', '.join(d['aux_losses'])}")
    console.print(d["doc"], markup=False, highlight=False)
    return 0


# --------------------------------------------------------------------------- docs/BLOCKS.md

REGENERATE = "python -m dsl.tools.catalogue -o docs/BLOCKS.md"


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _sorted_builtin() -> list[registry.Decl]:
    """Built-in blocks first, then functions, each alphabetically. Plugins are
    left out: the page documents this package, whatever else is installed."""
    table = registry.load()
    decls = [d for d in table.values() if d.source == "builtin"]
    return sorted(decls, key=lambda d: (d.kind != "block", d.name))


def _anchor(name: str) -> str:
    return name.lower()


def _section(d: dict[str, Any]) -> list[str]:
    out = [f"### {d['name']}", "", f"*{d['kind']}* · `{d['signature'] or '—'}`", ""]
    ins = ", ".join(
        f"`{a['name']}`"
        + (" (optional)" if a["optional"] else "")
        + (" (any number)" if a["variadic"] else "")
        for a in d["inputs"]
    )
    out.append(
        f"**Inputs:** {ins or 'none'} · **outputs:** {', '.join(f'`{o}`' for o in d['outputs'])}"
    )
    out.append("")
    docs = [a for a in d["inputs"] if a["doc"]]
    for a in docs:
        out.append(f"- `{a['name']}`: {_cell(a['doc'])}")
    if docs:
        out.append("")
    if d["params"]:
        out += ["| param | type | default | meaning |", "|---|---|---|---|"]
        out += [
            f"| `{r['name']}` | `{_cell(r['type'])}` | `{_cell(r['default'])}` | {_cell(r['doc'])} |"
            for r in d["params"]
        ]
        out.append("")
    if d["aux_losses"]:
        out += [
            f"**Auxiliary losses** (added to the training loss): {', '.join(f'`{a}`' for a in d['aux_losses'])}",
            "",
        ]
    if d["paper"]:
        out += [f"**Paper:** {_cell(d['paper'])}", ""]
    if d["doc"]:
        out += ["```text", textwrap.dedent(d["doc"]).strip("\n").replace("```", "` ` `"), "```", ""]
    return out


def markdown() -> str:
    """The reference page of every built-in block and function."""
    decls = [describe(d) for d in _sorted_builtin()]
    out = [
        "# Block reference",
        "",
        f"<!-- Generated from the registry by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Every block (capitalised, has weights) and function (lower case) that a spec can",
        "call, with its shapes, tensor inputs, hyperparameters and paper. The same data",
        "is printed by `dsl blocks [NAME]`; YAML editors get it through `dsl schema`.",
        "",
        "| name | kind | shapes | summary |",
        "|---|---|---|---|",
    ]
    for d in decls:
        first = d["doc"].strip().splitlines()[0] if d["doc"].strip() else ""
        out.append(
            f"| [`{d['name']}`](#{_anchor(d['name'])}) | {d['kind']} | `{_cell(d['signature'])}` | {_cell(first)} |"
        )
    for kind, title in (("block", "Blocks"), ("function", "Functions")):
        out += ["", f"## {title}", ""]
        for d in decls:
            if d["kind"] == kind:
                out += _section(d)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsl.tools.catalogue", description="Write docs/BLOCKS.md from the registry."
    )
    parser.add_argument("-o", "--output", metavar="OUT", help="write here (default: stdout)")
    parser.add_argument(
        "--check", metavar="FILE", help="exit 1 when FILE differs from what would be written"
    )
    args = parser.parse_args(argv)
    text = markdown()
    if args.check:
        try:
            with open(args.check, encoding="utf-8") as fh:
                current = fh.read()
        except OSError as e:
            print(f"error: cannot read {args.check}: {e}", file=sys.stderr)
            return 1
        if current != text:
            print(f"{args.check} is out of date; run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    if args.output:
        try:
            atomic_text(args.output, text)
        except OSError as e:
            print(f"error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
