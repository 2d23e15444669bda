#!/bin/bash
# RFC 8767 serve-stale and upstream-failure behaviour of unbound 1.17 (and through the front)
cd ${WORK:-/tmp/dns-front}
d() { local t0=$(date +%s%N); local o=$(dig @$1 -p 10053 $2 $3 +time=5 +tries=1 2>&1); local t1=$(date +%s%N)
      printf '%-12s %-22s %-4s -> %-9s ttl/ans=%-28s %5d ms\n' "$1" "$2" "$3" "$(echo "$o" | grep -o 'status: [A-Z]*' | cut -d' ' -f2)" "$(echo "$o" | awk '/ANSWER SECTION/{a=1;next} a&&NF{print $2, $5; exit}')" $(( (t1-t0)/1000000 )); }
echo "-- warm cache (upstream up)"; d 127.0.18.4 www.example.com A; d 127.0.18.4 www.example.com TXT
echo "-- kill upstream dnsmasq"; kill $(cat run/dnsmasq.pid); rm run/dnsmasq.pid; sleep 1
d 127.0.18.4 www.example.com A
d 127.0.18.4 never-cached.example.com A
d 127.0.18.2 never-cached2.example.com A
echo "-- wait 32 s: cached records expire (TTL 30)"; sleep 32
d 127.0.18.4 www.example.com A
d 127.0.18.4 www.example.com TXT
d 127.0.18.4 www.example.com A
d 127.0.18.4 one.ns1.svc.cluster.local A
echo "-- restart upstream"; dnsmasq -k -C cfg/upstream-dnsmasq.conf --user=root > run/dnsmasq.log 2>&1 & echo $! > run/dnsmasq.pid; sleep 1
d 127.0.18.4 www.example.com A
echo "-- kill the tenant resolver (unbound): front behaviour"; kill $(cat run/unbound.pid); rm run/unbound.pid
for i in 1 2 3 4; do d 127.0.18.4 www.example.com MX; d 127.0.18.4 one.ns1.svc.cluster.local A; sleep 0.5; done
unbound -d -c cfg/unbound-tenant.conf > run/unbound.log 2>&1 & echo $! > run/unbound.pid; sleep 2
d 127.0.18.4 www.example.com MX
