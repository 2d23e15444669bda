"""Sources turn files (``files``) or Kubernetes watch events (``kubernetes``) into model
objects in the store, and nothing else.

May import: ``store``, ``runtime``, ``core``.
"""
