"""The vocabularies of categorical fields, kept in the run directory as ``vocab.json``.

``table(..., categorical=[...])`` turns each category into its index in a
vocabulary (the column's distinct values, sorted); ``images()`` numbers its
class folders the same way. ``vocab.json`` maps each such field (``y`` for the
label) to its vocabulary, so index ``i`` of a prediction reads back as text.
"""

from __future__ import annotations

import json
from typing import Any

from dsl.language.files import atomic_text
from dsl.training.hooks import Hook

VOCAB_FILE = "vocab.json"


class Vocabularies(Hook):
    name = "vocab"

    def __init__(self, vocabularies: dict[str, list[str]]):
        self.vocabularies = vocabularies

    def on_fit_start(self, trainer: Any) -> None:
        if trainer.run is not None:
            atomic_text(trainer.run.file(VOCAB_FILE), json.dumps(self.vocabularies, indent=1) + "\n")


def make(trainer: Any) -> Hook | None:
    vocabularies = getattr(trainer.data, "vocabularies", None)
    return Vocabularies(dict(vocabularies)) if vocabularies else None
