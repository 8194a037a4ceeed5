"""Data sources for the train section. Pure Python at import: loading is lazy."""

from dsl.data.registry import Source, SourceParams, lookup_source, register_source, source_names

__all__ = ["Source", "SourceParams", "lookup_source", "register_source", "source_names"]
