"""Fakes at the boundaries the control plane talks across, for tests and benchmarks.

- ``kube``: a Kubernetes API server speaking the real list/watch wire protocol, with
  leases, TokenReviews and SubjectAccessReviews (``rbac`` decides the latter).
- ``podsim``: what the kubelet does with a pod spec ($(VAR) expansion, downward API).

Each is real code the product talks to over its real interface (a socket, a pod spec);
none patches the product's internals.
"""
