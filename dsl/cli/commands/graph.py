"""`dsl graph FILE [--format mermaid|dot|svg|html] [--expand] [-o OUT]`: draw the model.

The drawing comes from the *checked* program (no torch): every node with its
block, the hyperparameters that differ from their defaults and its output
shapes; user blocks as clusters; ``repeat`` folded into one ``×n`` cluster
unless ``--expand``. Mermaid and DOT need nothing installed. SVG runs
Graphviz's ``dot``; when it is not on PATH the command says how to install it
(exit 2). HTML is one self-contained page: the SVG inline when ``dot`` exists,
otherwise (or when ``dot`` fails) a plain HTML rendering; never a script or
a network fetch.
Exit codes: 0 drawn, 1 the spec has errors, 2 usage errors (or no ``dot`` for SVG).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess

NAME = "graph"
HELP = "draw the architecture (mermaid, dot, svg, html) with shapes"

INSTALL_DOT = (
    "Graphviz's `dot` is not on PATH; --format svg needs it. Install Graphviz "
    "(Debian/Ubuntu: `sudo apt install graphviz`; macOS: `brew install graphviz`; "
    "conda: `conda install graphviz`; Windows: https://graphviz.org/download/), "
    "or use --format mermaid, dot or html, which need nothing"
)
DOT_TIMEOUT_S = 120


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="spec file (.dsl or .yaml)")
    parser.add_argument(
        "--format",
        choices=["mermaid", "dot", "svg", "html"],
        default="mermaid",
        help="output format (default: mermaid)",
    )
    parser.add_argument("--expand", action="store_true", help="draw every copy of each `repeat`")
    parser.add_argument(
        "-o", "--output", metavar="OUT", help="write here (atomically) instead of stdout"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="K=V", help="override a param"
    )
    parser.add_argument(
        "--dim", action="append", default=[], metavar="N=34", help="bind a symbolic dim"
    )
    parser.add_argument("--json", action="store_true", help="print diagnostics as JSON")


def render_svg(dot_source: str) -> str:
    """SVG from Graphviz; UsageError with install instructions when ``dot`` is missing."""
    from dsl.cli.main import UsageError

    exe = shutil.which("dot")
    if exe is None:
        raise UsageError(INSTALL_DOT)
    try:
        done = subprocess.run(
            [exe, "-Tsvg"],
            input=dot_source,
            capture_output=True,
            text=True,
            timeout=DOT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UsageError(f"running Graphviz `dot` failed: {e}") from None
    if done.returncode != 0 or "<svg" not in done.stdout:
        raise UsageError(
            f"Graphviz `dot` failed (exit {done.returncode}): {done.stderr.strip()[:500]}"
        )
    return done.stdout


def _svg_if_possible(dot_source: str) -> str | None:
    """Graphviz SVG for the HTML page when ``dot`` is on PATH and works; the page
    falls back to its plain rendering otherwise (saying why when ``dot`` failed)."""
    import sys

    from dsl.cli.main import UsageError

    if shutil.which("dot") is None:
        return None
    try:
        return render_svg(dot_source)
    except UsageError as e:
        print(f"dsl graph: warning: {e}; the page uses its plain rendering", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from dsl.api import analyse
    from dsl.cli.main import emit_diagnostics, parse_dims, parse_overrides
    from dsl.cli.output import emit, load_with_source
    from dsl.tools.drawing import build_drawing, to_dot, to_html, to_mermaid

    overrides = parse_overrides(args.set)
    dims = parse_dims(args.dim)
    spec, source = load_with_source(args.file)
    analysis = analyse(spec, dims, overrides)
    prog, diags = analysis.program, analysis.diagnostics
    errors = [d for d in diags if d.severity == "error"]
    if errors or prog is None:
        emit_diagnostics(diags, args.json, {args.file: source, **analysis.resolved.sources})
        return 1
    model_args = {k: v.value for k, v in analysis.resolved.model_args.items()}
    drawing = build_drawing(
        prog, analysis.resolved.blocks, analysis.resolved.model, expand=args.expand, args=model_args
    )
    if args.format == "mermaid":
        text = to_mermaid(drawing)
    elif args.format == "dot":
        text = to_dot(drawing)
    elif args.format == "svg":
        text = render_svg(to_dot(drawing))
    else:
        text = to_html(drawing, _svg_if_possible(to_dot(drawing)))
    emit(text, args.output)
    return 0
