#!/bin/bash
# time from exec to first DNS answer with an rcode (not a refused connection). usage: startup.sh NAME SERVER QNAME -- command...
N=$1 S=$2 Q=$3; shift 4
t0=$(date +%s%N)
setsid "$@" > ${WORK:-/tmp/dns-front}/run/$N.startup.log 2>&1 < /dev/null & echo $! > ${WORK:-/tmp/dns-front}/run/$N.pid
until dig @$S -p 10053 $Q ${QT:-A} +time=1 +tries=1 2>/dev/null | grep -q 'status: \(NOERROR\|NXDOMAIN\)'; do sleep 0.005; done
t1=$(date +%s%N)
echo "$N startup to first answer: $(( (t1-t0)/1000000 )) ms (pid $(cat ${WORK:-/tmp/dns-front}/run/$N.pid))"
