"""The foundations every layer shares: the model, names, manifests, settings, errors.

Holds: ``errors`` (the one exception tree), ``model`` (frozen dataclasses), ``names``
(DNS names and patterns), ``manifests`` (dicts -> model objects), ``inventory`` (the
immutable set of objects and what changed), ``settings`` (validated setting groups),
``workload`` (Envoy node metadata -> who a sidecar speaks for), ``frozenmap``,
``ttlcache``, ``frozen`` (a faster ``__init__`` for frozen slotted dataclasses).

May import: nothing of the package. Pure: no I/O, no clock, no threads, no asyncio.
"""
