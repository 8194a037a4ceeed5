"""Character corpora for ``chars(...)``: a user's text file, or a generated one
whose entropy is known exactly (imports torch; loaded lazily).

Characters are ids below :data:`VOCAB` = 96: the printable ASCII characters
``' '..'~'`` are 0..94 and a newline is 95. Any other character (a tab, a
non-ASCII letter) reads as ``'?'``: a model over 96 ids cannot predict what it
has no id for, and dropping it would join the words around it.

The generated corpus is a word-level Markov chain written out as characters.
A lexicon of lowercase words (plus ``.`` and a newline word) is drawn from the
seed; after each word the next is drawn from its own few successors, whose
first characters all differ, and words are joined by single spaces. So, given
everything before it, a character is either determined (inside a word, the
space after it) or is the first character of the next word, whose probability
is that word's transition probability. The corpus's entropy, the loss per
character that no model can beat, is therefore exact:

    H = Σ_words −log p(word | previous word) / number of predicted characters

computed on each split's own text (it is the floor for a model that sees the
whole history; a window of ``context`` characters sees less at its start).
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Any

import torch

from dsl.data.base import TableDataset
from dsl.data.files import DataError
from dsl.data.sources import CHARS_VOCAB

VOCAB = CHARS_VOCAB
NEWLINE_ID = 95
UNKNOWN = "?"
SPLIT_FRACTIONS = {"train": 0.9, "val": 0.05, "test": 0.05}

#: generated lexicon: how many words, how many successors each, their lengths
WORDS = 120
SUCCESSORS = 4
MIN_LENGTH, MAX_LENGTH = 2, 7


def encode(text: str) -> torch.Tensor:
    """Character ids [len(text)] long: printable ASCII -> 0..94, newline -> 95, others as '?'."""
    unknown = ord(UNKNOWN) - 32
    ids = [NEWLINE_ID if c == "\n" else (ord(c) - 32 if " " <= c <= "~" else unknown) for c in text]
    return torch.tensor(ids, dtype=torch.long)


def decode(ids: Any) -> str:
    """The text of character ids (the inverse of :func:`encode` on its alphabet)."""
    return "".join("\n" if int(i) == NEWLINE_ID else chr(int(i) + 32) for i in ids)


@dataclass
class Chain:
    """The generator: words and, per word, its successors with their probabilities."""

    words: list[str]
    successors: list[list[int]]
    probs: list[list[float]]


def make_chain(g: torch.Generator) -> Chain:
    """A lexicon and its transitions; every word's successors start with different characters."""
    letters = string.ascii_lowercase
    words: list[str] = [".", "\n"]
    seen = set(words)
    while len(words) < WORDS:
        n = int(torch.randint(MIN_LENGTH, MAX_LENGTH + 1, (1,), generator=g))
        w = "".join(letters[int(i)] for i in torch.randint(0, 26, (n,), generator=g))
        if w not in seen:
            seen.add(w)
            words.append(w)
    by_first: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        by_first.setdefault(w[0], []).append(i)
    firsts = sorted(by_first)
    successors, probs = [], []
    for _ in words:
        succ = []
        for j in torch.randperm(len(firsts), generator=g)[:SUCCESSORS].tolist():
            group = by_first[firsts[j]]
            succ.append(group[int(torch.randint(0, len(group), (1,), generator=g))])
        # log-normal weights: some transitions nearly certain, others spread out
        w = torch.exp(2.0 * torch.randn(len(succ), generator=g, dtype=torch.float64))
        successors.append(succ)
        probs.append((w / w.sum()).tolist())
    return Chain(words, successors, probs)


def generate(chain: Chain, chars: int, g: torch.Generator) -> tuple[str, torch.Tensor]:
    """At least ``chars + 1`` characters from ``chain`` and, per character, −log p(it | all before it)."""
    parts: list[str] = []
    costs: list[float] = []
    word = 0
    while len(costs) < chars + 1:
        j = int(torch.multinomial(torch.tensor(chain.probs[word]), 1, generator=g))
        cost = -math.log(chain.probs[word][j])
        word = chain.successors[word][j]
        text = chain.words[word] + " "
        parts.append(text)
        # the first character names the word (its siblings start differently); the rest is determined
        costs.extend([cost] + [0.0] * (len(text) - 1))
    return "".join(parts), torch.tensor(costs, dtype=torch.float64)


def windows(ids: torch.Tensor, context: int) -> dict[str, torch.Tensor]:
    """Non-overlapping windows: tokens [N, context] and next [N, context] (the following characters)."""
    n = (ids.numel() - 1) // context
    if n < 1:
        raise ValueError(f"{ids.numel()} characters make no window of context={context} plus one to predict")
    tokens = ids[: n * context].reshape(n, context)
    following = ids[1 : n * context + 1].reshape(n, context)
    return {"tokens": tokens, "next": following}


def split_bounds(n: int) -> dict[str, tuple[int, int]]:
    """Contiguous train/val/test ranges of ``n`` characters (no window straddles two splits)."""
    train = int(n * SPLIT_FRACTIONS["train"])
    val = int(n * SPLIT_FRACTIONS["val"])
    return {"train": (0, train), "val": (train, train + val), "test": (train + val, n)}


def read_text(path: str, limit: int) -> str:
    """A user's text file (UTF-8, a regular file of at most ``limit`` bytes)."""
    from dsl.language.files import read_bounded

    try:
        raw = read_bounded(path, limit, "text file")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}", path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})", path) from None


def load_chars(p: Any, seed: int) -> TableDataset:
    """The dataset of ``chars(context, batch, path, chars, seed)``; see the module docstring."""
    s = seed if p.seed is None else p.seed
    info: dict[str, Any] = {"vocab": VOCAB}
    if p.path is None:
        g = torch.Generator().manual_seed(s)
        text, costs = generate(make_chain(g), p.chars, g)
        info["corpus"] = "generated"
    else:
        from dsl.data.files import resolve_path

        path = resolve_path(p)
        text, costs = read_text(path, p.max_bytes), None
        info["corpus"] = path
    ids = encode(text)
    splits: dict[str, dict[str, torch.Tensor]] = {}
    for name, (a, b) in split_bounds(ids.numel()).items():
        try:
            splits[name] = windows(ids[a:b], p.context)
        except ValueError as exc:
            raise DataError(f"the {name} split of the corpus is too short: {exc}", info["corpus"]) from None
        if costs is not None:  # the floor over exactly the characters the split's windows predict
            used = splits[name]["next"].numel()
            info[f"entropy_{name}"] = float(costs[a + 1 : a + 1 + used].mean())
    dataset = TableDataset(splits, p.batch, s)
    dataset.info = info
    return dataset
