"""prim router service."""
