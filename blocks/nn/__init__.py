"""torch modules behind the block declarations (imported only when building)."""
