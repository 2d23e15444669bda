"""What the e2e tests drive real processes with; no tests here.

- ``paths``: the repository's examples and the users' seed examples.
- ``dnsquery``: one DNS query over UDP, answers sorted.
- ``ads_client``: a scripted ADS client on a real gRPC channel (no Envoy).
- ``sidecars``: an Envoy of the project's bootstrap that flushes its stats every second.
- ``dnsservers``: unbound as a tenant's own DoT/DoH server, and a private CA for it.
- ``realclients``: glibc and musl resolvers in a private mount namespace.
- ``appclients``: application resolvers (glibc, getent, musl, Go, busybox, Node, Java, dig)
  with a pod's resolv.conf, over UDP or TCP, one typed answer per lookup.
- ``refserver``: a reference unbound on a pod's nameserver address (UDP and TCP).
- ``injected_pod``: an injected pod in a fresh network namespace (run with ``-m``).
- ``policy_server``: a real external authorization server on Rego (run with ``-m``).
- ``stats_sink_load``: synthetic sidecars against the stats sink (run with ``-m``).

e2e test modules import from here (and from ``tests.fakes``/``tests.tools``), never from
one another; fixtures live in ``e2e/conftest.py``.
"""
