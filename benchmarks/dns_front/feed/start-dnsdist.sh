#!/bin/sh
cd ${WORK:-/tmp/dns-front-feed}; setsid dnsdist -C ${WORK:-/tmp/dns-front-feed}/dnsdist-front.conf --supervised --disable-syslog -v > run/dnsdist.log 2>&1 < /dev/null & echo $! > run/dnsdist.pid
