#!/usr/bin/env python3
"""gen.py N OUT [--extra NAME ...] [--dns-only NAME ...] [--http-503] [--rds [--rds-only]] (env IP) [--no-dns] [--no-http] [--http-down]
Writes an LDS DiscoveryResponse (JSON) with
  dns_acme  : UDP 127.0.22.1:10053 Envoy DNS filter, inline table: N A names (+ extras)
  envoy_set : TCP 127.0.22.1:18080 HTTP listener; GET /envoy-set -> direct_response body
              "<TYPE> <name>\n" per (name,type) Envoy answers; ETag = sha1(body)[:16];
              a request with If-None-Match == ETag -> 304 without body.
The control plane would emit the same two listeners over ADS (body = the set it put in the DNS table)."""
import hashlib
import json
import os
import sys

a = sys.argv[1:]
n, out = int(a[0]), a[1]
IP = os.environ.get("IP", "127.0.22.1")
extras = []; dnsonly = []; i = 2
flags = set()
while i < len(a):
    if a[i] == '--extra': extras.append(a[i+1]); i += 2
    elif a[i] == '--dns-only': dnsonly.append(a[i+1]); i += 2   # in Envoy's DNS table but not in the body
    else: flags.add(a[i]); i += 1
names = [f"svc-{k:06d}.namespace-{k%100:02d}.svc.cluster.local" for k in range(n)] + extras
body = ''.join(f"A {nm}.\n" for nm in names)
etag = '"' + hashlib.sha1(body.encode()).hexdigest()[:16] + '"'
res = []
if '--no-dns' not in flags:
    vds = [{"name": nm, "endpoint": {"address_list": {"address": [f"10.{(k>>16)&255}.{(k>>8)&255}.{k&255}"]}},
            "answer_ttl": "30s"} for k, nm in enumerate(names + dnsonly)]
    res.append({"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "dns_acme",
        "address": {"socket_address": {"address": IP, "port_value": 10053, "protocol": "UDP"}},
        "listener_filters": [{"name": "envoy.filters.udp.dns_filter", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.udp.dns_filter.v3.DnsFilterConfig",
            "stat_prefix": "tenant.acme",
            "server_config": {"inline_dns_table": {"virtual_domains": vds}}}}]})
if '--no-http' not in flags:
    routes = [
      {"match": {"path": "/envoy-set", "headers": [{"name": "if-none-match", "string_match": {"exact": etag}}]},
       "direct_response": {"status": 304}, "response_headers_to_add": [{"header": {"key": "etag", "value": etag}}]},
      {"match": {"path": "/envoy-set"},
       "direct_response": {"status": 503 if '--http-503' in flags else 200, "body": {"inline_string": body}},
       "response_headers_to_add": [{"header": {"key": "etag", "value": etag}}]},
    ]
    rc = {"name": "envoy_set", "max_direct_response_body_size_bytes": 64 * 1024 * 1024,
          "virtual_hosts": [{"name": "set", "domains": ["*"], "routes": routes}]}
    RDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(out))), 'rds', 'rds.json')
    if '--rds' in flags:   # route config as its own xDS resource (RDS): body updates do not touch the listener
        os.makedirs(os.path.dirname(RDS), exist_ok=True)
        rd = {"version_info": etag.strip('"'), "resources": [dict(rc, **{"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"})]}
        t2 = '${WORK:-/tmp/dns-front-feed}/gen/rds.tmp'; json.dump(rd, open(t2, 'w')); os.rename(t2, RDS)
        if '--rds-only' in flags: print(f"{RDS}: names={len(names)} etag={etag}"); sys.exit(0)
    res.append({"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": "envoy_set",
        "address": {"socket_address": {"address": IP, "port_value": 18080}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "envoy_set",
            **({"rds": {"route_config_name": "envoy_set", "config_source": {"resource_api_version": "V3",
                  "path_config_source": {"path": RDS, "watched_directory": {"path": os.path.dirname(RDS)}}}}}
               if '--rds' in flags else {"route_config": rc}),
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]})
doc = {"version_info": etag.strip('"'), "resources": res}
tmp = '${WORK:-/tmp/dns-front-feed}/gen/' + os.path.basename(out) + '.tmp'
with open(tmp, 'w') as f: json.dump(doc, f)
import os; os.rename(tmp, out)   # atomic rename: Envoy's watch sees one complete file
print(f"{out}: names={len(names)} body={len(body)} B etag={etag}")
