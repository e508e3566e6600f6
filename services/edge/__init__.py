"""prim edge service."""
