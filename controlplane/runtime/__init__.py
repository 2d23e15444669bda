"""The process runtime: how the event loop and the worker threads share the interpreter
(``heap``: switch interval, garbage collection around heavy work), and the child
processes it runs (``process``) or has the resolver host run (``spawner``), long-lived
threads and tasks started under supervision (``supervise``) and the readiness their
crashes fail (``readiness``).

May import: ``core`` (its exception tree).
"""
