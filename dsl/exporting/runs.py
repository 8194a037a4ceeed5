"""``dsl export RUN``: a trained run as one artefact of its own: ONNX, torch.export, or Python.

What is exported is the run's model behind its input preprocessing
(:func:`dsl.building.preprocess.with_preprocessing`), so the artefact takes raw inputs
and gives what ``dsl predict`` gives:

* ``onnx`` and ``pt2``: the standardisation is part of the graph, the weights are inside;
* ``python``: ``<stem>.py`` (the model's class as ``--emit python`` writes it, a
  ``Standardize`` module and ``Trained<Model>`` around it, and ``load()``) and
  ``<stem>.safetensors`` beside it (the weights and the statistics).

Categorical vocabularies map strings to indices before any tensor exists: they are written
beside the artefact as ``<stem>.preprocess.json``, with the names of a table's numeric
columns in the order of ``x``'s last axis. Each artefact is loaded back and run next
to the run's module on random inputs of other sizes than the traced ones; a difference over
:func:`tolerance` (1e-4, relative above 1) at any output removes every file written and raises an
:class:`~dsl.exporting.formats.ExportError` naming the output and the difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from dsl.checking.program import Program
from dsl.data.preprocess import Preprocessing
from dsl.exporting.formats import (
    ExportError,
    abs_diff,
    check_inputs,
    export_program,
    flat_outputs,
    onnx_outputs,
    pt2_outputs,
    reference_outputs,
    write_onnx,
)
from dsl.exporting.python import comment_text, emit_python, load_generated
from dsl.language.files import atomic_text, atomic_write

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "python": ".py"}
TOLERANCE = 1e-4


@dataclass
class Exported:
    """What ``dsl export`` wrote; per output, the max abs difference and the largest magnitude
    of the run's output (empty: no check ran)."""

    files: list[str]
    diffs: dict[str, float] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)

    @property
    def worst(self) -> tuple[str, float] | None:
        """The output furthest from its tolerance, and its max abs difference."""
        if not self.diffs:
            return None
        name = max(self.diffs, key=lambda k: self.diffs[k] / tolerance(self.scales.get(k, 0.0)))
        return name, self.diffs[name]

    @property
    def ok(self) -> bool:
        return all(d <= tolerance(self.scales.get(k, 0.0)) for k, d in self.diffs.items())


def tolerance(scale: float) -> float:
    """:data:`TOLERANCE`, relative for outputs larger than 1 (float32 keeps about 7 digits:
    a squared distance of 2,000 cannot agree to 1e-4 absolutely)."""
    return TOLERANCE * max(1.0, scale)


def companion(path: str, suffix: str) -> str:
    """``model.onnx`` -> ``model<suffix>``: a file written beside the artefact."""
    return os.path.splitext(path)[0] + suffix


def export_trained(module: fx.GraphModule, prog: Program, prep: Preprocessing, fmt: str, path: str,
                   source: str | None = None) -> Exported:
    """Write the trained ``module`` (raw inputs in) to ``path`` as ``fmt``, check it, and return
    what was written; nothing stays on disk when it fails."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}", f"formats: {', '.join(FORMATS)}")
    module.eval()
    done = Exported([path])
    try:
        inputs = check_inputs(prog)
        if fmt == "pt2":
            torch.export.save(export_program(module, prog), path)
            actual = pt2_outputs(path, inputs)
        elif fmt == "onnx":
            write_onnx(module, prog, path)
            actual = onnx_outputs(path, inputs)
        else:
            actual = _write_python(module, prog, path, source, done.files, inputs)
        if prep.vocabularies or prep.columns:  # what the caller applies: values to indices, columns in order
            vocab = companion(path, ".preprocess.json")
            done.files.append(vocab)
            atomic_text(vocab, Preprocessing(vocabularies=prep.vocabularies, columns=prep.columns).to_json())
        if actual is not None:
            expected = dict(zip(prog.outputs, reference_outputs(module, inputs), strict=True))
            done.diffs = {n: abs_diff(e, a) for (n, e), a in zip(expected.items(), actual, strict=True)}
            done.scales = {n: _magnitude(e) for n, e in expected.items()}
            _verdict(done, path)
    except BaseException:
        for f in done.files:
            if os.path.lexists(f):
                os.unlink(f)
        raise
    return done


def _magnitude(t: torch.Tensor) -> float:
    finite = t.detach()[torch.isfinite(t.detach())]
    return float(finite.abs().max()) if finite.numel() else 0.0


def _verdict(done: Exported, path: str) -> None:
    worst = done.worst
    if worst is not None and not done.ok:
        limit = tolerance(done.scales.get(worst[0], 0.0))
        raise ExportError(f"{path} disagrees with the run's module at output `{worst[0]}` (max abs diff "
                          f"{worst[1]:.3g}, over the tolerance {limit:.3g}); the file was removed")


def _write_python(module: fx.GraphModule, prog: Program, path: str, source: str | None, files: list[str],
                  inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    from safetensors.torch import save

    weights = companion(path, ".safetensors")
    trained = TrainedPython(prep_of(module), os.path.basename(weights))
    text = emit_python(prog, source, trained=trained)
    files.append(weights)
    atomic_text(path, text)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    data = save(tensors)
    # Written by us, not by save_file (which makes a 0600 file): the mode the .py file gets.
    atomic_write(weights, lambda tmp: _write_bytes(tmp, data))
    try:
        loaded = load_generated(path, "load")()
        with torch.no_grad():
            return flat_outputs(loaded(**inputs))
    except Exception as e:  # the file is ours; if it cannot load its own weights, say so
        raise ExportError(f"the written file cannot load the run back: {type(e).__name__}: {e}") from None


def prep_of(module: Any) -> Preprocessing:
    prep = getattr(module, "dsl_preprocessing", None)
    return prep if isinstance(prep, Preprocessing) else Preprocessing()


@dataclass
class TrainedPython:
    """The part of an exported Python file that a run adds: preprocessing, ``load()``, the header."""

    prep: Preprocessing
    weights: str  # the weights file's name, beside the .py

    def decorate(self, emitter: Any, top: str, model: fx.GraphModule, source: str | None) -> tuple[str, str, list[str]]:
        """(header, tail, exports) of the file whose model class is ``top``."""
        emitter._bind("os", "import os")
        emitter.imports.add(("import", "os", None))
        emitter._import("safetensors.torch", "load_file")
        for name in ("WEIGHTS", "load"):
            emitter._bind(name, "the run's export")
        inputs = [n.target for n in model.graph.nodes if n.op == "placeholder"]
        returns = _return_type(model)
        parts = [f"WEIGHTS = {self.weights!r}  # the run's weights (and input statistics), beside this file"]
        made = top
        if self.prep.standardize:
            standardize = emitter._fresh_class_name("Standardize")
            made = emitter._fresh_class_name(f"Trained{top}")
            for name in (standardize, made):
                emitter._bind(name, "the run's export")
            parts += [_standardize_class(standardize), self._trained_class(made, top, standardize, inputs, returns)]
        parts.append(_load_function(made))
        header = self._header(top, made, inputs, source)
        exports = [top, *([made] if made != top else []), "load"]
        return header, "\n\n\n".join(parts), exports

    def _trained_class(self, name: str, top: str, standardize: str, inputs: list[str], returns: str) -> str:
        stats = ", ".join(f"{k!r}: {standardize}({tuple(s.shape)!r})" for k, s in self.prep.standardize.items())
        sig = ", ".join(f"{n}: torch.Tensor" for n in inputs)
        body = [f"        {n} = self.preprocess[{n!r}]({n})" for n in inputs if n in self.prep.standardize]
        call = ", ".join(f"{n}={n}" for n in inputs)
        return (
            f"class {name}(nn.Module):\n"
            f'    """`{top}` behind the run\'s input preprocessing: it takes raw inputs, as `dsl predict` does."""\n\n'
            "    def __init__(self) -> None:\n"
            "        super().__init__()\n"
            f"        self.preprocess = nn.ModuleDict({{{stats}}})\n"
            f"        self.model = {top}()\n\n"
            f"    def forward(self, {sig}) -> {returns}:\n"
            + "\n".join(body) + "\n"
            f"        return self.model({call})"
        )

    def _header(self, top: str, made: str, inputs: list[str], source: str | None) -> str:
        origin = f" from the run {comment_text(source)}" if source else ""
        call = ", ".join(f"{n}=..." for n in inputs)
        return (
            f'"""{top}, trained: a standalone PyTorch file written by `dsl export`{origin}.\n\n'
            "It needs torch and safetensors (and the libraries imported below), not dsl. `load()`\n"
            f"returns the trained model ({made}) in eval mode, taking raw inputs as `dsl predict` does:\n\n"
            "    model = load()  # weights from WEIGHTS, beside this file\n"
            f"    outputs = model({call})\n"
            '"""'
        )


def _return_type(model: fx.GraphModule) -> str:
    out = next(n for n in model.graph.nodes if n.op == "output")
    return "dict[str, torch.Tensor]" if isinstance(out.args[0], dict) else "torch.Tensor"


def _standardize_class(name: str) -> str:
    return (
        f"class {name}(nn.Module):\n"
        '    """`(x - mean) / std` with the statistics of the run\'s training split."""\n\n'
        "    def __init__(self, shape: tuple[int, ...]) -> None:\n"
        "        super().__init__()\n"
        '        self.register_buffer("mean", torch.zeros(shape))\n'
        '        self.register_buffer("std", torch.ones(shape))\n\n'
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
        "        return (x - self.mean) / self.std"
    )


def _load_function(made: str) -> str:
    return (
        f"def load(weights: str | None = None) -> {made}:\n"
        '    """The trained model in eval mode; its weights from `weights` (default: WEIGHTS beside this file)."""\n'
        f"    model = {made}()\n"
        "    path = weights or os.path.join(os.path.dirname(os.path.abspath(__file__)), WEIGHTS)\n"
        "    model.load_state_dict(load_file(path))\n"
        "    return model.eval()"
    )


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
