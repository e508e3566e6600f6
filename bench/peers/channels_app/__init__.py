"""Peer: Django Channels with channels_redis under uvicorn (see ``__main__``)."""
