"""The store: every origin's objects merged into ``Inventory`` snapshots with last-good
semantics, thread-safe (``store``).

May import: ``core``.
"""
