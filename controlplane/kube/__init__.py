"""Kubernetes API clients other than the watch source: the reviews behind identity
(``identity``, ``admin_review``), leader election (``leadership`` pure rules, ``leader``
the thread), the status writer, and the runner that wires them with the source for
``serve`` (``runner``).

May import: ``hub`` and everything below it. The only package besides ``sources`` that
imports ``kubernetes``.
"""
