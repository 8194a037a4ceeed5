"""A run's input preprocessing, as plain data: what turns raw inputs into what the model saw.

A data source that transforms its fields before training (``digits()`` and the tables
standardise ``x`` with the training split's statistics; a source with categorical columns
maps each value to an index) describes the transform here, so that ``dsl predict``,
``dsl.load_run`` and ``dsl export`` apply the same one to raw inputs. Two kinds:

* ``standardize``: ``(x - mean) / std`` per field, ``mean`` and ``std`` of a shape that
  broadcasts against the field (``[1, F]`` for table rows, ``[1, C, 1, 1]`` for a
  per-channel image normalisation);
* ``vocabularies``: the values of a categorical field, in index order (value ``v`` becomes
  ``vocabulary.index(v)``); strings become indices before any tensor exists, so exports
  write them beside the artefact for the caller to apply;
* ``columns``: for a field made of a table's columns (``x``), their names in the order of
  its last axis, so that new rows are read by column name, never by position.

It is saved in a run directory as ``preprocess.json`` and read back from there, so
exporting needs neither the data nor its source. The file is untrusted input: it is read
bounded, and every entry is validated (identifier field names, finite numbers, positive
deviations, sizes that agree). Pure Python: building the modules that apply it is
:mod:`dsl.building.preprocess`'s job.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsl.language.errors import RunError
from dsl.language.files import read_bounded

PREPROCESS_FILE = "preprocess.json"
MAX_BYTES = 64 * 2**20  # 64 MiB of JSON: the statistics of about 3 million features
MAX_VALUES = 10_000_000  # statistics or vocabulary entries per field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Standardize(_Strict):
    """``(x - mean) / std``; ``shape`` is the statistics' shape, which broadcasts against the field."""

    shape: tuple[int, ...] = Field(min_length=1, max_length=8)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @field_validator("shape")
    @classmethod
    def _positive(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 1 for d in shape):
            raise ValueError(f"shape {list(shape)} has a size below 1")
        return shape

    @model_validator(mode="after")
    def _sizes_agree(self) -> Standardize:
        n = math.prod(self.shape)
        if n > MAX_VALUES or len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"shape {list(self.shape)} needs {n} values; mean has {len(self.mean)}, "
                             f"std {len(self.std)} (at most {MAX_VALUES:,})")
        if not all(math.isfinite(v) for v in self.mean):
            raise ValueError("mean holds a value that is not a finite number")
        if not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError("std holds a value that is not a positive finite number")
        return self

    @property
    def features(self) -> int:
        return self.shape[-1]


class Preprocessing(_Strict):
    """Every transform of a run's inputs, by field name; empty when the model takes raw data."""

    version: int = 1
    standardize: dict[str, Standardize] = Field(default_factory=dict)
    vocabularies: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    columns: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("standardize", "vocabularies", "columns")
    @classmethod
    def _identifiers(cls, fields: dict[str, Any]) -> dict[str, Any]:
        for name in fields:
            if not name.isidentifier():
                raise ValueError(f"field name {name!r} is not an identifier")
        return fields

    @field_validator("vocabularies", "columns")
    @classmethod
    def _unique(cls, lists: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, values in lists.items():
            if len(values) > MAX_VALUES or len(set(values)) != len(values):
                raise ValueError(f"the list of `{name}` repeats a value or has over {MAX_VALUES:,}")
        return lists

    @property
    def empty(self) -> bool:
        return not self.standardize and not self.vocabularies

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1) + "\n"


def parse(text: str | bytes, where: str) -> Preprocessing:
    """A :class:`Preprocessing` from JSON; RunError naming ``where`` and the first problem."""
    try:
        return Preprocessing.model_validate(json.loads(text))
    except (ValueError, RecursionError) as exc:  # json's and pydantic's errors are ValueErrors
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}" if first else str(exc)
        raise RunError(f"{where} is not a valid preprocessing file ({detail})") from None


def read(path: str) -> Preprocessing:
    """The preprocessing saved at ``path`` (a regular file, bounded)."""
    try:
        data = read_bounded(path, MAX_BYTES, "preprocessing file")
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse(data, path)


def of_dataset(dataset: Any) -> Preprocessing:
    """What a loaded dataset did to its fields: its ``scaling`` (field -> (mean, std) tensors)
    and, where it has them, its ``vocabularies`` (field -> values in index order)."""
    standardize = {
        name: Standardize(shape=tuple(int(d) for d in mean.shape) or (1,),
                          mean=tuple(float(v) for v in mean.reshape(-1).tolist()),
                          std=tuple(float(v) for v in std.reshape(-1).tolist()))
        for name, (mean, std) in (getattr(dataset, "scaling", None) or {}).items()
    }
    vocabularies = {k: tuple(v) for k, v in (getattr(dataset, "vocabularies", None) or {}).items()}
    columns = {k: tuple(v) for k, v in (getattr(dataset, "columns", None) or {}).items()}
    return Preprocessing(standardize=standardize, vocabularies=vocabularies, columns=columns)
