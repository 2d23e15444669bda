#!/bin/bash
# upstream failure: time to SERVFAIL for an uncached name; serve-stale with client-timeout 1800 (.2) vs 0 (.6); recovery after upstream returns
cd ${WORK:-/tmp/dns-front}
d() { local t0=$(date +%s%N); local o=$(dig @$1 -p 10053 $2 $3 +time=20 +tries=1 2>&1); local t1=$(date +%s%N)
      printf '%s %-12s %-26s %-4s -> %-9s %-26s %5d ms\n' "$(date +%T)" "$1" "$2" "$3" "$(echo "$o" | grep -o 'status: [A-Z]*' | cut -d' ' -f2)" "$(echo "$o" | awk '/ANSWER SECTION/{a=1;next} a&&NF{print $2, $5; exit}')" $(( (t1-t0)/1000000 )); }
unbound -d -c cfg/unbound-tenant-stale0.conf > run/unbound6.log 2>&1 & echo $! > run/unbound6.pid; sleep 1
for s in 127.0.18.2 127.0.18.6; do d $s mx.example.com A; d $s www.example.com TXT; done
kill $(cat run/dnsmasq.pid); rm run/dnsmasq.pid; echo "-- upstream down"
d 127.0.18.2 uncached1.example.com A & d 127.0.18.6 uncached2.example.com A & wait
echo "-- wait for TTL expiry"; sleep 31
for i in 1 2; do d 127.0.18.2 www.example.com TXT; d 127.0.18.6 www.example.com TXT; done
dnsmasq -k -C cfg/upstream-dnsmasq.conf --user=root > run/dnsmasq.log 2>&1 & echo $! > run/dnsmasq.pid; echo "-- upstream back $(date +%T)"; sleep 0.5
for i in $(seq 1 12); do d 127.0.18.2 www.example.com MX; d 127.0.18.6 www.example.com MX; sleep 5; done
kill $(cat run/unbound6.pid); rm -f run/unbound6.pid
