"""What a tenant may see: which DnsPolicy selects a workload (``selection``) and the
decisions an external policy server gave (``decisions``, the pure cache; the gRPC
client is ``controlplane.policyserver``).

May import: ``core``. Pure.
"""
