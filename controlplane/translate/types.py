"""xDS type URLs, in the order ADS must send them (make-before-break)."""

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# RDS after LDS: a listener that names a route waits (warms) for it, so the route of a new
# listener is asked for once the listener arrives (the DNS front's set, front_routes.py).
# SDS first: a cluster that names a Secret warms until it arrives, so a new certificate is
# sent before any cluster update that could wait on it (the mutual hop, clusters.py).
ORDERED_TYPES = (SECRET_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE)
# SotW: a missing Listener or Cluster in a response means "delete it" (checklist #11); a
# RouteConfiguration (like a ClusterLoadAssignment) absent from a response is not deleted.
FULL_STATE_TYPES = frozenset({CLUSTER_TYPE, LISTENER_TYPE})
# Types a client subscribes to by name only: an empty list of names means none, never
# "all" (Envoy names every route its listeners use; checklist #9 is for the others).
# Secrets likewise: Envoy names the ones its clusters use.
NAMED_ONLY_TYPES = frozenset({ROUTE_TYPE, SECRET_TYPE})
SHORT_NAMES = {CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", LISTENER_TYPE: "lds", ROUTE_TYPE: "rds",
               SECRET_TYPE: "sds"}
