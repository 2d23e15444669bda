"""The ADS server: sans-IO protocol state machines (``protocol`` for state of the world,
``delta``), the per-view snapshot (``snapshot``), what a stream needs from the
configuration side (``watcher``: the hub implements it), the grpcio driver (``server``)
and the bytes-in-flight budget its streams share (``budget``).

May import: ``identity``, ``runtime``, ``translate``, ``core``.
"""
