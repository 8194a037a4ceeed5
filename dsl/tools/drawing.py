"""Architecture drawings of a checked program (``dsl graph``). Pure Python.

:func:`build_drawing` turns the typed :class:`~dsl.checking.program.Program` that the
checker produced into a small, format-free :class:`Drawing`: one box per node
(its name, block or function, the hyperparameters that differ from their
defaults, and its output shapes), one cluster per call of a user ``block``
(holding that call's own inputs, nodes and outputs) and one cluster per
``repeat``. The renderers write it as Mermaid, Graphviz DOT, SVG (through
Graphviz's ``dot``) or one self-contained HTML page.

Folding ``repeat``: the checker unrolls loops, so the program has every copy.
A node made by the k-th copy comes from the same source expression (the same
span) as the node of the first copy, so folding keeps the first node of each
span inside a loop, redirects edges of later copies to it, and labels the
cluster ``×n`` (n counted from the spans, so it holds for counts that are
params). Edges that carry a value from one copy to the next are drawn dashed
(``next``). ``expand=True`` keeps every copy.

Every name and string that reaches a drawing comes from a user, so node ids
are generated (``n0``, ``c1``) and labels are escaped for each format.
"""

from __future__ import annotations

import bisect
import html
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from dsl.checking.program import PNode, Program, Ref, arg_refs, describe_params
from dsl.language import ir
from dsl.language.diagnostics import Span

__all__ = [
    "Cluster",
    "DNode",
    "Drawing",
    "Edge",
    "build_drawing",
    "to_dot",
    "to_html",
    "to_mermaid",
]

MAX_LABEL = 72  # characters per label line; longer hyperparameter lists are cut

NodeKind = Literal["input", "output", "block", "function", "op"]


@dataclass
class DNode:
    id: str
    kind: NodeKind
    lines: list[str]  # title, hyperparameters, shapes


@dataclass
class Edge:
    src: str
    dst: str
    label: str = ""
    loop: bool = False  # from one repeat copy to the next


@dataclass
class Cluster:
    id: str
    kind: Literal["model", "block", "repeat"]
    title: str
    items: list[DNode | Cluster] = field(default_factory=list)


@dataclass
class Drawing:
    title: str
    root: Cluster
    edges: list[Edge] = field(default_factory=list)

    def nodes(self) -> Iterator[DNode]:
        yield from _walk_nodes(self.root)

    def clusters(self) -> Iterator[Cluster]:
        yield from _walk_clusters(self.root)


def _walk_nodes(c: Cluster) -> Iterator[DNode]:
    for item in c.items:
        if isinstance(item, Cluster):
            yield from _walk_nodes(item)
        else:
            yield item


def _walk_clusters(c: Cluster) -> Iterator[Cluster]:
    for item in c.items:
        if isinstance(item, Cluster):
            yield item
            yield from _walk_clusters(item)


# --------------------------------------------------------------------------- building

_SpanKey = tuple[str, int, int, int, int]


def _key(span: Span) -> _SpanKey:
    return (span.file, span.line, span.col, span.end_line, span.end_col)


def _inside(inner: Span, outer: Span) -> bool:
    return (
        inner.known
        and inner.file == outer.file
        and (inner.line, inner.col) >= (outer.line, outer.col)
        and (inner.end_line, inner.end_col) <= (outer.end_line, outer.end_col)
    )


def _repeats(body: Iterable[Any]) -> list[ir.Repeat]:
    return [s for s in body if isinstance(s, ir.Repeat)]


def _group(
    nodes: Iterable[PNode], repeats: list[ir.Repeat]
) -> tuple[list[ir.Repeat], dict[int, list[PNode]]]:
    """The nodes made inside each of ``repeats`` (statements of one body, so their
    spans do not overlap), by bisection on the spans: linear in the nodes."""
    ordered = sorted((r for r in repeats if r.span.known), key=lambda r: (r.span.line, r.span.col))
    starts = [(r.span.line, r.span.col) for r in ordered]
    groups: dict[int, list[PNode]] = {id(r): [] for r in ordered}
    for n in nodes:
        i = bisect.bisect_right(starts, (n.span.line, n.span.col)) - 1
        if i >= 0 and _inside(n.span, ordered[i].span):
            groups[id(ordered[i])].append(n)
    return ordered, groups


def _count_copies(rep: ir.Repeat, direct: list[PNode]) -> int:
    """How many times the body ran: the occurrences of a span made directly by
    the body (not by a nested loop); a literal count when there is none."""
    seen: dict[_SpanKey, int] = {}
    for n in direct:
        seen[_key(n.span)] = seen.get(_key(n.span), 0) + 1
    if seen:
        return max(seen.values())
    if isinstance(rep.count, ir.Num) and isinstance(rep.count.value, int):
        return rep.count.value
    return 1


def _short(text: str) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1] + "…"


def _calls(spec_part: Iterable[Any]) -> Iterator[ir.Call]:
    """Every call expression under some IR nodes (to find a user call's arguments)."""
    for part in spec_part:
        if isinstance(part, ir.Node):
            yield from (node for node in part.walk() if isinstance(node, ir.Call))


class _Builder:
    def __init__(self, blocks: dict[str, ir.BlockDef], model: ir.BlockDef | None, expand: bool):
        self.blocks = blocks
        self.model = model
        self.expand = expand
        self.counter = 0
        self.edges: list[Edge] = []
        self.seen: set[tuple[str, str, str, bool]] = set()  # edges already drawn
        self.uses: dict[int, Counter[str]] = {}  # per program: calls of each module
        self.user_in: dict[str, list[str]] = {}  # user call -> its drawn input nodes
        self.pending: dict[str, tuple[Cluster, Cluster]] = {}  # repeat clusters not placed yet
        parts: list[Any] = list(blocks.values()) + ([model] if model is not None else [])
        self.calls = {_key(c.span): c for c in _calls(parts)}

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # ----------------------------------------------------------------- one program

    def program(
        self, prog: Program, cluster: Cluster, body: tuple[Any, ...], inputs: dict[str, str] | None
    ) -> list[str]:
        """Draw ``prog`` into ``cluster``; ``inputs`` maps each input name to the
        caller's drawing node (None for the model). Returns the drawing ids of
        the program's outputs, in order."""
        ids: dict[str, str] = {}  # program node -> drawing node (after folding)
        outs: dict[str, list[str]] = {}  # user call -> its drawing outputs
        containers = self.containers(prog, cluster, body)
        first_of: dict[tuple[int, _SpanKey], str] = {}
        order: dict[str, int] = {}
        for pos, node in enumerate(prog.nodes):
            container, rid = containers[node.name]
            fold_key = (rid, _key(node.span))
            if rid >= 0 and not self.expand and fold_key in first_of:
                rep = first_of[fold_key]  # a later copy: drawn by the first; only its edges count
                ids[node.name] = rep
                if node.kind == "user":
                    outs[node.name] = outs[rep]
                    for ref, dst in zip(arg_refs(node.args), self.user_in.get(rep, [])):
                        self.edge(self.source(ref, ids, outs), dst, "", order, order[rep])
                else:
                    self.wire(prog, node, rep, ids, outs, order)
                continue
            first_of[fold_key] = node.name if node.kind == "user" else self.fresh("n")
            did = first_of[fold_key]
            ids[node.name] = did
            order[did] = pos
            if node.kind == "user":
                outs[node.name] = self.user(prog, node, container, ids, outs)
                order.update({o: pos for o in outs[node.name]})
                continue
            self.attach(container).items.append(self.node(prog, node, did))
            if node.kind == "input" and inputs is not None and node.var in inputs:
                self.edges.append(Edge(inputs[node.var], did))
            self.wire(prog, node, did, ids, outs, order)
        result = []
        for name, ref in prog.outputs.items():
            if name.startswith("aux:"):
                continue
            did = self.fresh("n")
            t = prog.type_of(ref)
            cluster.items.append(DNode(did, "output", [_short(f"output {name}"), _short(str(t))]))
            self.edges.append(Edge(self.source(ref, ids, outs), did))
            result.append(did)
        return result

    def source(self, ref: Ref, ids: dict[str, str], outs: dict[str, list[str]]) -> str:
        """The drawing node that shows the value ``ref`` (a user call's output node)."""
        if ref.node in outs:
            sub = outs[ref.node]
            return sub[min(ref.index, len(sub) - 1)]
        return ids[ref.node]

    def wire(
        self,
        prog: Program,
        node: PNode,
        did: str,
        ids: dict[str, str],
        outs: dict[str, list[str]],
        order: dict[str, int],
    ) -> None:
        """Edges into ``did`` from the producers of ``node``'s inputs; a keyword
        tensor input (``mask=padding``) is labelled with its keyword."""
        labelled = [(ref, self.edge_label(prog, ref)) for ref in arg_refs(node.args)]
        for key, ref in node.kwargs.items():
            produced = self.edge_label(prog, ref)
            labelled.append((ref, f"{produced} → {key}" if produced else key))
        for ref, label in labelled:
            self.edge(self.source(ref, ids, outs), did, label, order, order[did])

    def edge(self, src: str, dst: str, label: str, order: dict[str, int], dst_pos: int) -> None:
        """Add an edge once; one from a later node back to an earlier one carries
        a value from one repeat copy to the next."""
        loop = src in order and order[src] >= dst_pos
        e = Edge(src, dst, "next" if loop else label, loop)
        key = (e.src, e.dst, e.label, e.loop)
        if key not in self.seen:
            self.seen.add(key)
            self.edges.append(e)

    def edge_label(self, prog: Program, ref: Ref) -> str:
        producer = prog.node(ref.node)
        if len(producer.types) < 2:
            return ""
        if producer.decl is not None and ref.index < len(producer.decl.outputs):
            return producer.decl.outputs[ref.index]
        return f"output {ref.index}"

    def attach(self, box: Cluster) -> Cluster:
        """Place a repeat cluster (and the ones around it) in its parent at the
        point where its first node is drawn, so clusters keep dataflow order."""
        if box.id in self.pending:
            parent, _ = self.pending.pop(box.id)
            self.attach(parent).items.append(box)
        return box

    # ----------------------------------------------------------------- repeats

    def containers(
        self, prog: Program, cluster: Cluster, body: tuple[Any, ...]
    ) -> dict[str, tuple[Cluster, int]]:
        """For each program node: the cluster it is drawn in and the id of the
        outermost repeat holding it (-1 outside loops)."""
        where: dict[str, tuple[Cluster, int]] = {n.name: (cluster, -1) for n in prog.nodes}
        outer, groups = _group(prog.nodes, _repeats(body))
        for rep in outer:
            if groups[id(rep)]:
                self.repeat_clusters(rep, groups[id(rep)], cluster, id(rep), where, 1)
        return where

    def repeat_clusters(
        self,
        rep: ir.Repeat,
        members: list[PNode],
        parent: Cluster,
        rid: int,
        where: dict[str, tuple[Cluster, int]],
        outer_copies: int,
    ) -> None:
        inner, groups = _group(members, _repeats(rep.body))
        nested = {n.name for r in inner for n in groups[id(r)]}
        copies = _count_copies(rep, [n for n in members if n.name not in nested])
        count = ir_text(rep.count)
        if copies % max(outer_copies, 1):  # the count changes from one outer copy to the next
            title = f"repeat {count} ({copies} copies in all)"
        else:
            per_outer = max(copies // max(outer_copies, 1), 1)
            title = (
                f"repeat ×{per_outer}"
                if count == str(per_outer)
                else f"repeat {count} (×{per_outer})"
            )
        if rep.var:
            title += f" as {rep.var}"
        if self.expand:
            title += ", expanded"
        box = Cluster(self.fresh("c"), "repeat", _short(title))
        self.pending[box.id] = (parent, box)  # placed where its first node is
        for n in members:
            where[n.name] = (box, rid)
        if self.expand:
            return  # nested loops stay flat when every copy is drawn
        for r in inner:
            if groups[id(r)]:
                self.repeat_clusters(r, groups[id(r)], box, rid, where, copies)

    # ----------------------------------------------------------------- nodes

    def node(self, prog: Program, node: PNode, did: str) -> DNode:
        types = [str(prog.env.resolve_type(t)) for t in node.types]
        if node.kind == "input":
            return DNode(
                did,
                "input",
                [_short(f"input {node.var or node.op}"), _short(types[0] if types else "")],
            )
        title = node.op
        params = describe_params(node.params)
        if (
            node.module is not None
            and node.module in prog.modules
            and prog.modules[node.module].kind == "value"
        ):
            value = prog.modules[node.module].value
            if id(prog) not in self.uses:
                self.uses[id(prog)] = Counter(n.module for n in prog.nodes if n.module)
            shared = self.uses[id(prog)][node.module] > 1
            title = node.module + (" (shared)" if shared else "")
            params = value.describe() if value is not None else ""
        if node.var:
            title = f"{node.var} = {title}"
        lines = [_short(title)]
        if params:
            lines.append(_short(params))
        names = list(node.decl.outputs) if node.decl is not None else []
        if len(types) > 1 and len(names) == len(types):
            lines.extend(_short(f"{n}: {t}") for n, t in zip(names, types))
        else:
            lines.extend(_short(t) for t in types)
        kind: NodeKind = (
            "op"
            if node.kind in ("binop", "unary")
            else ("function" if node.kind == "function" else "block")
        )
        return DNode(did, kind, lines)

    def user(
        self,
        prog: Program,
        node: PNode,
        container: Cluster,
        ids: dict[str, str],
        outs: dict[str, list[str]],
    ) -> list[str]:
        spec_ = prog.modules[node.module].program if node.module in prog.modules else None
        call = self.calls.get(_key(node.span))
        args = (
            ", ".join(f"{k.name}={ir_text(k.value)}" for k in call.kwargs)
            if call is not None
            else ""
        )
        title = f"{node.op}({args})"
        if node.var:
            title = f"{node.var} = {title}"
        box = Cluster(self.fresh("c"), "block", _short(title))
        self.attach(container).items.append(box)
        if spec_ is None:
            return []
        bdef = self.blocks.get(node.op)
        body = bdef.body if bdef is not None else ()
        arg_ids = [self.source(r, ids, outs) for r in arg_refs(node.args)]
        names = list(spec_.inputs)
        result = self.program(spec_, box, body, dict(zip(names, arg_ids)))
        self.user_in[node.name] = self.input_ids(box)  # in declaration order, as the arguments
        return result

    @staticmethod
    def input_ids(box: Cluster) -> list[str]:
        return [n.id for n in box.items if isinstance(n, DNode) and n.kind == "input"]


def describe_values(values: dict[str, Any]) -> str:
    """``a=1, b="x"`` in the spelling of the language (``true``, ``null``)."""

    def spell(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "null"
        if isinstance(v, str):
            from dsl.language.printer import quote

            return quote(v)
        return repr(v)

    return ", ".join(f"{k}={spell(v)}" for k, v in values.items())


def ir_text(e: Any) -> str:
    from dsl.language.printer import expr_to_text

    try:
        return expr_to_text(e)
    except TypeError:
        return "?"


def build_drawing(
    prog: Program,
    blocks: dict[str, ir.BlockDef],
    model: ir.BlockDef | None,
    expand: bool = False,
    args: dict[str, Any] | None = None,
) -> Drawing:
    """The drawing of a checked program. ``blocks`` and ``model`` are the
    resolved definitions (``checker.res``), whose spans locate the loops;
    ``args`` the model's argument values, for its title."""
    b = _Builder(blocks, model, expand)
    args_text = describe_values(args or {})
    root = Cluster(
        "c0", "model", _short(f"model {prog.name}" + (f"({args_text})" if args_text else ""))
    )
    b.program(prog, root, model.body if model is not None else (), None)
    return Drawing(prog.name, root, b.edges)


# --------------------------------------------------------------------------- Mermaid

_MERMAID_ESCAPES = {
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "&": "#amp;",
    "#": "#35;",
    "`": "#96;",
    "|": "#124;",
    "\\": "#92;",
}


def mermaid_label(lines: Iterable[str]) -> str:
    """A quoted Mermaid label: entity codes for the characters Mermaid reads as
    syntax or markup, ``<br>`` between lines."""
    return (
        '"'
        + "<br>".join("".join(_MERMAID_ESCAPES.get(ch, ch) for ch in line) for line in lines)
        + '"'
    )


_MERMAID_SHAPES = {
    "input": ('(["', '"])'),
    "output": ('(["', '"])'),
    "block": ('["', '"]'),
    "function": ('("', '")'),
    "op": ('(("', '"))'),
}


def to_mermaid(d: Drawing) -> str:
    """Mermaid ``flowchart`` source (renders on GitHub, GitLab and mermaid.live)."""
    out = ["flowchart TD"]

    def emit(c: Cluster, depth: int) -> None:
        pad = "    " * depth
        for item in c.items:
            if isinstance(item, Cluster):
                out.append(f"{pad}subgraph {item.id} [{mermaid_label([item.title])}]")
                emit(item, depth + 1)
                out.append(f"{pad}end")
            else:
                left, right = _MERMAID_SHAPES[item.kind]
                out.append(f"{pad}{item.id}{left[:-1]}{mermaid_label(item.lines)}{right[1:]}")

    out.append(f"    subgraph {d.root.id} [{mermaid_label([d.root.title])}]")
    emit(d.root, 2)
    out.append("    end")
    for e in d.edges:
        arrow = "-.->" if e.loop else "-->"
        label = f"|{mermaid_label([e.label])}|" if e.label else ""
        out.append(f"    {e.src} {arrow}{label} {e.dst}")
    for kind, style in (
        ("input", "fill:#e8f4ff,stroke:#3070b0"),
        ("output", "fill:#eaf7e8,stroke:#3a8a3a"),
    ):
        ids = [n.id for n in d.nodes() if n.kind == kind]
        if ids:
            out.append(f"    classDef {kind} {style}")
            out.append(f"    class {','.join(ids)} {kind}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- DOT

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def dot_string(text: str) -> str:
    """A DOT double-quoted string whose text reads exactly ``text`` (backslashes
    doubled so that none starts an escape such as ``\\N`` or ``\\l``)."""
    text = _CONTROL.sub("?", text).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def dot_label(lines: Iterable[str]) -> str:
    return "\\n".join(dot_string(line)[1:-1] for line in lines).join('""')


_DOT_SHAPES = {
    "input": 'shape=box, style="rounded,filled", fillcolor="#e8f4ff"',
    "output": 'shape=box, style="rounded,filled", fillcolor="#eaf7e8"',
    "block": "shape=box",
    "function": "shape=box, style=rounded",
    "op": "shape=ellipse",
}
# Statements inside a subgraph: separated by `;` (commas only separate attributes in [...]).
_DOT_CLUSTERS = {
    "model": 'style=solid; color="#888888"',
    "block": 'style="rounded,filled"; fillcolor="#f6f6f6"',
    "repeat": 'style=dashed; color="#b05a00"',
}


def to_dot(d: Drawing) -> str:
    """Graphviz DOT source (``dot -Tsvg``, ``dot -Tpng``)."""
    out = [
        "digraph dsl {",
        "    rankdir=TB;",
        '    graph [fontname="Helvetica", fontsize=12];',
        '    node [fontname="Helvetica", fontsize=11];',
        '    edge [fontname="Helvetica", fontsize=9];',
        "    compound=true;",
    ]

    def emit(c: Cluster, depth: int) -> None:
        pad = "    " * depth
        out.append(f"{pad}subgraph cluster_{c.id} {{")
        out.append(f"{pad}    label={dot_label([c.title])}; {_DOT_CLUSTERS[c.kind]};")
        for item in c.items:
            if isinstance(item, Cluster):
                emit(item, depth + 1)
            else:
                out.append(
                    f"{pad}    {item.id} [label={dot_label(item.lines)}, {_DOT_SHAPES[item.kind]}];"
                )
        out.append(f"{pad}}}")

    emit(d.root, 1)
    for e in d.edges:
        attrs = []
        if e.label:
            attrs.append(f"label={dot_string(e.label)}")
        if e.loop:
            attrs.append("style=dashed, constraint=false")
        out.append(f"    {e.src} -> {e.dst}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,Helvetica,Arial,sans-serif;margin:2rem;color:#222}
h1{font-size:1.3rem}
.cluster{border:1px solid #999;border-radius:8px;padding:.5rem .7rem;margin:.5rem 0}
.cluster.block{background:#f6f6f6}.cluster.repeat{border:2px dashed #b05a00}
.ctitle{font-weight:600;margin-bottom:.3rem}
.node{border:1px solid #555;border-radius:4px;padding:.3rem .5rem;margin:.3rem 0;background:#fff;
font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85rem}
.node.input{background:#e8f4ff}.node.output{background:#eaf7e8}.node.op{border-style:dotted}
.from{color:#666;font-size:.75rem}
pre{background:#f4f4f4;padding:.7rem;overflow:auto;font-size:.8rem}
svg{max-width:100%;height:auto}
"""


def _html_cluster(
    c: Cluster, incoming: dict[str, list[str]], names: dict[str, str], out: list[str]
) -> None:
    out.append(f'<div class="cluster {c.kind}"><div class="ctitle">{html.escape(c.title)}</div>')
    for item in c.items:
        if isinstance(item, Cluster):
            _html_cluster(item, incoming, names, out)
            continue
        body = "<br>".join(html.escape(line) for line in item.lines)
        srcs = incoming.get(item.id, [])
        src = f'<div class="from">← {html.escape(", ".join(srcs))}</div>' if srcs else ""
        out.append(f'<div class="node {item.kind}" id="{item.id}">{body}{src}</div>')
    out.append("</div>")


def to_html(d: Drawing, svg: str | None = None) -> str:
    """One self-contained page: no script, no external resource (a Content
    Security Policy forbids fetching any). With ``svg`` (Graphviz output) the
    drawing is that inline SVG; otherwise nested boxes in dataflow order, each
    listing where its inputs come from. The Mermaid and DOT sources follow."""
    names = {n.id: n.lines[0] for n in d.nodes()}
    incoming: dict[str, list[str]] = {}
    for e in d.edges:
        what = names.get(e.src, e.src) + (f" [{e.label}]" if e.label else "")
        incoming.setdefault(e.dst, []).append(what)
    title = html.escape(d.root.title)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
    ]
    if svg is not None:
        parts.append(_svg_element(svg))
    else:
        _html_cluster(d.root, incoming, names, parts)
    parts.append(
        "<details><summary>Mermaid source</summary><pre>"
        + html.escape(to_mermaid(d))
        + "</pre></details>"
    )
    parts.append(
        "<details><summary>Graphviz DOT source</summary><pre>"
        + html.escape(to_dot(d))
        + "</pre></details>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _svg_element(svg: str) -> str:
    """The ``<svg>`` element of Graphviz output, without its XML prolog and
    doctype (which are not allowed inside HTML)."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else ""
