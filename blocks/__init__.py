"""The block library: one block family per file, each registering its declarations.

Installed as ``dsl.blocks``; the torch modules that are not plain ``torch.nn``
layers live in ``dsl.blocks.nn`` so that importing a declaration never imports torch.
"""
