"""A tiny dsl plugin: the ``Scale`` block (see :mod:`dsl_scale_plugin.blocks`).

It imports nothing at package level, so loading the entry point stays cheap."""
