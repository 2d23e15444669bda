#!/bin/bash
# usage: bench.sh LABEL SERVER FILE [udp|tcp] [PIDFILE-of-process-to-charge-CPU]
# prints: label qps lost avg p50 p99 (ms) cpu-ms per 10k queries of the charged process
L=$1 S=$2 F=$3 M=${4:-udp} P=$5
cpu() { [ -n "$P" ] && awk '{print $14+$15}' /proc/$(cat $P)/stat || echo 0; }
c0=$(cpu)
dnsperf -s $S -p 10053 -d $F -l 10 -Q 2000 -m $M -v 2>/dev/null > ${WORK:-/tmp/dns-front}/run/dnsperf.$$.out
c1=$(cpu)
out=${WORK:-/tmp/dns-front}/run/dnsperf.$$.out
n=$(grep -c '^> ' $out)
lost=$(grep -o 'Queries lost: *[0-9]*' $out | awk '{print $3}')
qps=$(grep -o 'Queries per second: *[0-9.]*' $out | awk '{print $4}')
rc=$(grep 'Response codes' $out | sed 's/.*codes: *//')
grep '^> ' $out | awk '{print $NF*1000}' | sort -n > $out.lat
p() { awk -v q=$1 '{a[NR]=$1} END{i=int(NR*q); if(i<1)i=1; printf "%.3f", a[i]}' $out.lat; }
avg=$(awk '{s+=$1} END{printf "%.3f", s/NR}' $out.lat)
tick=$(getconf CLK_TCK)
cpu10k=$(awk -v a=$c0 -v b=$c1 -v n=$n -v t=$tick 'BEGIN{ if(n>0) printf "%.0f", (b-a)*1000/t*10000/n; else print "-"}')
printf '%-34s %-3s qps=%-8s lost=%-4s avg=%sms p50=%sms p99=%sms cpu=%sms/10k rc=[%s]\n' "$L" "$M" "$qps" "$lost" "$avg" "$(p 0.5)" "$(p 0.99)" "$cpu10k" "$rc"
rm -f $out $out.lat
