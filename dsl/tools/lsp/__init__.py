"""`dsl lsp`: a language server for ``.dsl`` and spec ``.yaml`` files (DESIGN §11).

Pure Python, like the rest of the front half: checking in the server never
imports torch. :mod:`.server` wires the protocol (pygls) to small modules that
know nothing of it beyond lsprotocol's types: :mod:`.documents` (open files,
their analyses and their ``use`` graph), :mod:`.index` (what each name in a
checked spec means), :mod:`.callees` (what a spec can call, described once),
:mod:`.hover`, :mod:`.completion`, :mod:`.symbols` and :mod:`.positions` (spans
to ranges). Formatting is :mod:`dsl.tools.formatting`, as for ``dsl fmt``.
Users' documentation: ``docs/EDITORS.md``.
"""
