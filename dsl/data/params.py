"""Arguments shared by the sources that read your files and split them (``table``, ``images``, ``pyg``)."""

from __future__ import annotations

from pydantic import Field

from dsl.data.registry import SourceParams


class SplitParams(SourceParams):
    """Rows per batch, the held-out fractions, the split seed and where relative paths start."""

    batch: int = Field(64, gt=0, description="items per batch")
    val: float = Field(0.2, ge=0, lt=1, description="fraction held out for validation (without own splits)")
    test: float = Field(0.2, gt=0, lt=1, description="fraction held out for testing (without own splits)")
    seed: int | None = Field(None, description="split seed (default: the train section's seed)")
    base_dir: str = Field("", description="directory relative paths are resolved against (the spec's)")
