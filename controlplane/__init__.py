"""xDS control plane for Envoy's DNS filter: per-tenant DNS views for Kubernetes."""

__version__ = "0.1.0"
