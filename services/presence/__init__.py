"""prim presence service."""
