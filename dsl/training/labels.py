"""Labels against the classes the loss knows, checked when the data loads.

:func:`check_labels` runs the rules of :mod:`dsl.checking.train.labels` over
every split of the data (a built-in source's labels are right, but a model may
score fewer classes than it has: ``digits()`` into ``Linear(out=5)``). A label
outside the classes is a diagnostic (E0703) at the offending line and column of
a CSV file, else at the spec's ``data = ...``, with a note at the loss that reads it.
"""

from __future__ import annotations

from typing import Any

from dsl.checking.analysis import Analysis
from dsl.checking.train.labels import LabelRule, label_rules
from dsl.language.diagnostics import Diagnostic, Span
from dsl.language.errors import SpecError


def check_labels(analysis: Analysis, data: Any) -> None:
    """SpecError (E0703) when a label of the data falls outside the classes of the loss reading it."""
    cfg = analysis.config
    if analysis.objective is None or cfg is None:
        return
    path = getattr(cfg.source_params, "path", None)
    where = path if isinstance(path, str) else f"{cfg.source.name}()" if cfg.source is not None else "the data"
    for rule in label_rules(analysis.objective):
        bad = _first_bad(rule, data)
        if bad is not None:
            raise SpecError([_diagnostic(rule, bad, where, cfg, isinstance(path, str))])


def _first_bad(rule: LabelRule, data: Any) -> int | None:
    """A label value of ``rule.field`` outside the classes, or None."""
    for split in ("train", *data.eval_splits):
        for batch in data.batches(split):
            t = batch.get(rule.field)
            if t is None or t.is_floating_point() or t.numel() == 0:
                continue
            wrong = (t < 0) | (t >= rule.classes)
            if rule.ignore is not None:
                wrong &= t != rule.ignore
            if bool(wrong.any()):
                return int(t[wrong].reshape(-1)[0])
    return None


def _diagnostic(rule: LabelRule, value: int, path: str, cfg: Any, from_file: bool) -> Diagnostic:
    from dsl.data.checks import find_csv_value
    from dsl.data.files import resolve_path

    file = resolve_path(cfg.source_params) if from_file else ""
    where = None
    if file.endswith(".csv") and rule.field == "y":
        where = find_csv_value(file, cfg.source_params.label,
                               lambda v: not (0 <= v < rule.classes or v == rule.ignore))
    span = Span(file=file, line=where[0], col=where[1], end_line=where[0], end_col=where[1] + len(where[2])) \
        if where else cfg.data_span
    also = " (-100 is ignored only where the loss says ignore_index=-100)" if value == -100 else ""
    d = Diagnostic("E0703", f"label {value} in `{rule.field}` of {path} is outside the {rule.classes} classes "
                   f"that `{rule.loss}` reads it against{also}", span,
                   label=f"labels are 0..{rule.classes - 1}")
    return d.note(f"`{rule.loss}` reads `{rule.field}` here", rule.span)
