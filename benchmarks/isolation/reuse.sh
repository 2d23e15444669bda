#!/bin/bash
# Connection reuse along kresd -> hop Envoy -> terminator -> unbound, after `lab.py up`.
# 1) 2,000 new names through tenant a's front at 200 q/s: connections opened at each step.
# 2) one query after idle gaps of 5, 20, 40 and 70 s: was a connection re-opened, and
#    which side closed it (hop: listener destroy = kresd closed; cluster destroy_remote =
#    the terminator closed; terminator: cluster resolver:a destroy_remote = unbound closed).
set -u
WORK=${WORK:-/tmp/isolation-lab}
PY=/work/main/.venv/bin/python
side() { ip netns exec iso-a curl -s 127.0.0.1:9902/stats; }
term() { ip netns exec iso-res curl -s 127.0.0.1:9901/stats; }
snap() {
  s=$(side); t=$(term)
  g() { echo "$1" | awk -F': ' -v k="$2" '$1==k{print $2}'; }
  echo "kresd->hop opened=$(g "$s" listener.127.0.0.1_15054.downstream_cx_total) closed_by_kresd_or_hop=$(g "$s" listener.127.0.0.1_15054.downstream_cx_destroy) active=$(g "$s" listener.127.0.0.1_15054.downstream_cx_active)" \
       "| hop->terminator opened=$(g "$s" cluster.tenant_resolver.upstream_cx_total) closed_by_terminator=$(g "$s" cluster.tenant_resolver.upstream_cx_destroy_remote) full_handshakes=$(( $(g "$s" cluster.tenant_resolver.ssl.handshake) - $(g "$s" cluster.tenant_resolver.ssl.session_reused) )) resumed=$(g "$s" cluster.tenant_resolver.ssl.session_reused)" \
       "| terminator->unbound opened=$(g "$t" cluster.resolver_a.upstream_cx_total) closed_by_unbound=$(g "$t" cluster.resolver_a.upstream_cx_destroy_remote)"
}
ip netns exec iso-a curl -s -X POST 127.0.0.1:9902/reset_counters >/dev/null
ip netns exec iso-res curl -s -X POST 127.0.0.1:9901/reset_counters >/dev/null
echo "after reset: $(snap)"
$PY -c "
import random
tag = '%08x' % random.getrandbits(32)
print('\n'.join(f'r{i}-{tag}.a.test A' for i in range(2000)))" > $WORK/reuse.txt
ip netns exec iso-a dnsperf -s 127.0.0.1 -p 53 -d $WORK/reuse.txt -n 1 -Q 200 2>/dev/null | grep -E "Queries (sent|completed|lost)" | tr -s ' ' | tr '\n' ' '; echo
echo "after 2000 queries: $(snap)"
for gap in 5 20 40 70; do
  sleep $gap
  ip netns exec iso-a dig +tries=1 +time=2 @127.0.0.1 gap$gap-$RANDOM.a.test A +short | tr '\n' ' '
  echo "after ${gap}s idle + 1 query: $(snap)"
done
