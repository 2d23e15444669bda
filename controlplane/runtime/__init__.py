"""The process runtime: how the event loop and the worker threads share the interpreter
(``heap``: switch interval, garbage collection around heavy work), and the child
processes it runs (``process``).

May import: nothing of the package.
"""
