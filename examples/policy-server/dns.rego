# A DNS policy for the control plane's external policy server (policy.server, protocol grpc),
# loadable unchanged by OPA's Envoy plugin (envoy_ext_authz_grpc, path envoy/authz/allow).
#
# The control plane asks Envoy's Check API about one name at a time:
#   input.attributes.context_extensions["dns.name"]       the name, lower case
#   input.attributes.context_extensions["dns.type"]       A, AAAA, ... or "*" (a table name)
#   input.attributes.context_extensions["dns.tenant"]     the DnsPolicy (tenant)
#   input.attributes.context_extensions["dns.namespace"]  the tenant's namespace, when it selects one
#   input.attributes.context_extensions["dns.namespaces"] every namespace it selects, comma-separated
#   input.attributes.source.labels                        the labels its pod selector requires
# (all per tenant: docs/policy-server.md, "Who asks")
# The answer's dynamic_metadata["dns.ttl_seconds"] is how long the decision lives.
package envoy.authz

import rego.v1

default allow := {"allowed": false, "dynamic_metadata": {"dns.ttl_seconds": 30}}

allow := {"allowed": true, "dynamic_metadata": {"dns.ttl_seconds": 30}} if allowed_name

name := lower(input.attributes.context_extensions["dns.name"])

# The tenant's own front services, not its internal ones.
allowed_name if {
	endswith(name, ".payments.svc.cluster.local")
	not startswith(name, "internal.")
}

# Partners and the public site.
allowed_name if endswith(name, ".partner.example")

allowed_name if name in {"www.example.com", "policy-server.acme.com"}
