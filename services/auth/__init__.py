"""prim auth service."""
