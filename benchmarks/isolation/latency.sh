#!/bin/bash
# Per-query latency through each path, from tenant a's pod (iso-a), after `lab.py up`.
# usage: latency.sh [SECONDS] [QPS]
# dnsperf over TCP (it keeps its connections: the cost of the hop, not of a handshake),
# CPU charged to the sidecar's Envoy and to the terminator (ms per 10k queries).
set -u
WORK=${WORK:-/tmp/isolation-lab}
L=${1:-10} Q=${2:-2000}
pid() { /work/main/.venv/bin/python -c "import json,sys;print(json.load(open('$WORK/pids.json'))[sys.argv[1]])" "$1"; }
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
tick=$(getconf CLK_TCK)
SIDE=$(pid sidecar-a) TERM=$(pid terminator)
printf 'a.test TXT\nx.a.test A\ny.a.test A\n' > $WORK/q.txt
run() { # label server port mode
  out=$WORK/dnsperf.out
  s0=$(cpu $SIDE) t0=$(cpu $TERM)
  ip netns exec iso-a dnsperf -s $2 -p $3 -d $WORK/q.txt -l $L -Q $Q -m $4 -c 1 -v 2>/dev/null > $out
  s1=$(cpu $SIDE) t1=$(cpu $TERM)
  n=$(grep -c '^> ' $out)
  lost=$(grep -o 'Queries lost: *[0-9]*' $out | awk '{print $3}')
  grep '^> ' $out | awk '{print $NF*1000}' | sort -n > $out.lat
  p() { awk -v q=$1 '{a[NR]=$1} END{i=int(NR*q); if(i<1)i=1; printf "%.3f", a[i]}' $out.lat; }
  c() { awk -v a=$1 -v b=$2 -v n=$n -v t=$tick 'BEGIN{printf "%.0f", (b-a)*1000/t*10000/n}'; }
  printf '%-44s %s n=%-6s lost=%-3s p50=%sms p90=%sms p99=%sms sidecar=%sms/10k terminator=%sms/10k\n' \
    "$1" "$4" "$n" "$lost" "$(p 0.5)" "$(p 0.9)" "$(p 0.99)" "$(c $s0 $s1)" "$(c $t0 $t1)"
}
run "direct to the resolver (no hop)"            10.251.0.1 5353  tcp
run "hop, plain TCP (front path, no TLS)"        127.0.0.1  15254 tcp
run "hop, TLS server-auth to unbound DoT (today)" 127.0.0.1 15154 tcp
run "hop, mTLS to the terminator (proposed)"     127.0.0.1  15054 tcp
