"""xDS type URLs, in the order ADS must send them (make-before-break)."""

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

ORDERED_TYPES = (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE)
# SotW: a missing Listener or Cluster in a response means "delete it" (checklist #11).
FULL_STATE_TYPES = frozenset({CLUSTER_TYPE, LISTENER_TYPE})
SHORT_NAMES = {CLUSTER_TYPE: "cds", ENDPOINT_TYPE: "eds", LISTENER_TYPE: "lds", ROUTE_TYPE: "rds"}
