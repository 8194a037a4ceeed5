"""A deliberately broken dsl plugin (see tests/test_plugins.py)."""
