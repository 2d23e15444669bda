#!/bin/bash
# continuation (upstream dnsmasq down for minutes): uncached + stale answers from .2 (client-timeout 1800) and .6 (client-timeout 0), then recovery
cd ${WORK:-/tmp/dns-front}
d() { local t0=$(date +%s%N); local o=$(dig @$1 -p 10053 $2 $3 +time=20 +tries=1 2>&1); local t1=$(date +%s%N)
      printf '%s %-12s %-26s %-4s -> %-9s %-26s %5d ms\n' "$(date +%T)" "$1" "$2" "$3" "$(echo "$o" | grep -o 'status: [A-Z]*' | cut -d' ' -f2)" "$(echo "$o" | awk '/ANSWER SECTION/{a=1;next} a&&NF{print $2, $5; exit}')" $(( (t1-t0)/1000000 )); }
for s in 127.0.18.2 127.0.18.6; do d $s uncached3.example.com A; d $s www.example.com TXT; d $s www.example.com TXT; done
dnsmasq -k -C cfg/upstream-dnsmasq.conf --user=root > run/dnsmasq.log 2>&1 & echo $! > run/dnsmasq.pid; echo "-- upstream back $(date +%T)"; sleep 0.5
for i in $(seq 1 14); do d 127.0.18.2 www.example.com TXT; d 127.0.18.6 www.example.com TXT; sleep 5; done
