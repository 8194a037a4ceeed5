"""Importing this module fails, as a plugin with a missing dependency would."""

raise RuntimeError("dsl_broken_plugin cannot start: its backend is missing")
