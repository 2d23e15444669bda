#!/bin/bash
# Does the front lose queries when the terminator cuts connections (tcp_proxy
# max_downstream_connection_duration)? usage: ISO_MAX_CONN_S=3 maxconn.sh   (or unset: control)
# 4,000 new names through tenant a's front at 200 q/s; lost, rcodes, latency, cuts.
set -u
WORK=${WORK:-/tmp/isolation-lab}
PY=/work/main/.venv/bin/python
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH=$HERE/../.. $PY $HERE/lab.py add-tenants --tenants "${TENANTS:-2}"
sleep 1
$PY -c "
import random
tag = '%08x' % random.getrandbits(32)
print('\n'.join(f'm{i}-{tag}.a.test A' for i in range(4000)))" > $WORK/maxconn.txt
c0=$(ip netns exec iso-a curl -s 127.0.0.1:9902/stats | awk -F': ' '$1=="listener.127.0.0.1_15054.downstream_cx_total"{print $2}')
ip netns exec iso-a dnsperf -s 127.0.0.1 -p 53 -d $WORK/maxconn.txt -n 1 -Q 200 -v 2>/dev/null > $WORK/maxconn.out
c1=$(ip netns exec iso-a curl -s 127.0.0.1:9902/stats | awk -F': ' '$1=="listener.127.0.0.1_15054.downstream_cx_total"{print $2}')
echo "ISO_MAX_CONN_S=${ISO_MAX_CONN_S:-none}: $(grep -E 'Queries lost|Response codes' $WORK/maxconn.out | tr -s ' ' | tr '\n' ' ')"
grep '^> ' $WORK/maxconn.out | awk '{print $NF*1000}' | sort -n | awk -v c=$((c1 - c0)) '{a[NR]=$1} END{printf "  p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms; connections kresd opened to the hop: %d\n", a[int(NR*.5)], a[int(NR*.99)], a[int(NR*.999)], a[NR], c}'
