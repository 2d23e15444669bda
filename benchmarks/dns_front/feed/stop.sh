#!/bin/sh
# stop everything started from ${WORK:-/tmp/dns-front-feed} (by pid file)
cd ${WORK:-/tmp/dns-front-feed}/run; for f in *.pid; do [ -f "$f" ] && kill $(cat $f) 2>/dev/null; rm -f "$f"; done; true
