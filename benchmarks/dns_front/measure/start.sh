#!/bin/sh
# start the prototype (all on :10053): upstream dnsmasq .3, tenant unbound .2, Envoy DNS listener .1 (admin :19901),
# fronts: dnsdist .4 (cfg/dnsdist-front.conf), kresd .7 (cfg/kresd-front.lua). setsid: keeps them out of the caller's process group.
R=${WORK:-/tmp/dns-front}; C=$R/cfg; L=$R/run; mkdir -p $L $L/kresd
s() { n=$1; shift; setsid "$@" > $L/$n.log 2>&1 < /dev/null & echo $! > $L/$n.pid; }
s dnsmasq dnsmasq -k -C $C/upstream-dnsmasq.conf --user=root
s unbound unbound -d -c $C/unbound-tenant.conf
s envoy /work/main/.venv/bin/envoy -c $C/envoy.yaml --use-dynamic-base-id --log-level warn
case "$1" in nofront) exit 0;; esac
s dnsdist dnsdist -C $C/dnsdist-front.conf --supervised --disable-syslog
s kresd kresd -n -q -c $C/kresd-front.lua $L/kresd
