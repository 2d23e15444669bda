#!/bin/sh
cd ${WORK:-/tmp/dns-front-feed}; setsid unbound -d -c unbound.conf > run/unbound.log 2>&1 < /dev/null & echo $! > run/unbound.pid
