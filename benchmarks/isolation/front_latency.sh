#!/bin/bash
# End to end from an application's view: dnsperf over UDP to a kresd front in tenant a's
# pod, every name new (so the front's cache misses and every query takes the hop), one
# kresd per path: 127.0.0.1:53 (lab.py's, via the mTLS hop 15054), 127.0.0.2:53 (plain
# hop 15254), 127.0.0.3:53 (today's TLS hop 15154). usage: front_latency.sh [SECONDS] [QPS]
set -u
WORK=${WORK:-/tmp/isolation-lab}
PY=/work/main/.venv/bin/python
L=${1:-10} Q=${2:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
for spec in "2 15254" "3 15154"; do
  set -- $spec
  d=$WORK/iso-a/kresd-$1; mkdir -p $d/cache $d/run
  [ -f $d/pid ] && continue
  PYTHONPATH=$HERE/../.. $PY -c "
from controlplane.dns.views import Upstream
from controlplane.translate.front import kresd_front_config
print(kresd_front_config(listen=(Upstream('127.0.0.$1', 53),), envoy=Upstream('127.0.0.1', 15053),
  set_url='http://127.0.0.1:15055/envoy-set', resolvers=(Upstream('127.0.0.1', $2),),
  resolver_tcp=True, cache_dir='$d/cache'))" > $d/kresd.lua
  ip netns exec iso-a setsid kresd -n -c $d/kresd.lua $d/run > $d/log 2>&1 &
  echo $! > $d/pid
done
sleep 1  # kresd binds in well under a second; the first query below would show a failure
run() { # label ip
  $PY -c "
import random
tag = '%08x' % random.getrandbits(32)
print('\n'.join(f'n{i}-{tag}.a.test A' for i in range($L * $Q + 1000)))" > $WORK/uniq.txt
  out=$WORK/front.out
  ip netns exec iso-a dnsperf -s $2 -p 53 -d $WORK/uniq.txt -l $L -Q $Q -v 2>/dev/null > $out
  n=$(grep -c '^> ' $out)
  lost=$(grep -o 'Queries lost: *[0-9]*' $out | awk '{print $3}')
  rc=$(grep 'Response codes' $out | sed 's/.*codes: *//')
  grep '^> ' $out | awk '{print $NF*1000}' | sort -n > $out.lat
  p() { awk -v q=$1 '{a[NR]=$1} END{i=int(NR*q); if(i<1)i=1; printf "%.3f", a[i]}' $out.lat; }
  printf '%-40s udp n=%-6s lost=%-3s p50=%sms p90=%sms p99=%sms rc=[%s]\n' "$1" "$n" "$lost" "$(p 0.5)" "$(p 0.9)" "$(p 0.99)" "$rc"
}
run "front -> plain hop (no TLS)" 127.0.0.2
run "front -> TLS hop, server-auth (today)" 127.0.0.3
run "front -> mTLS hop -> terminator" 127.0.0.1
