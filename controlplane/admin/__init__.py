"""The read-only admin API (``api``, FastAPI) and the operator console (``console``).

May import: ``hub`` and everything below it; never ``kube``, ``app`` or ``cli``.
"""
