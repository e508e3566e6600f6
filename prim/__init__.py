"""prim: a multi-tenant instant-messaging platform.

This package holds what the four services share: settings, logging, errors,
gRPC plumbing and the generated protocol stubs (``prim.pb``). The services
themselves are ``prim.auth``, ``prim.presence``, ``prim.router`` and
``prim.edge``.
"""

__version__ = "0.1.0"
