#!/bin/sh
L=${WORK:-/tmp/dns-front}/run
for p in dnsdist envoy unbound dnsmasq kresd pdns; do
  for f in $L/$p.pid $L/$p.pid.fg; do [ -f $f ] && kill $(cat $f) 2>/dev/null && rm -f $f; done
done; true
