"""The local-run kit: start real processes on this machine (``localrun``) and ``make run``
(``demo``). For tests, benchmarks and local runs; product code never imports it.

May import: anything.
"""
