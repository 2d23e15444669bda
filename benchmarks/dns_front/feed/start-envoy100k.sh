#!/bin/sh
# second Envoy (127.0.22.12) serving a 100k-name body via RDS, for the kresd 100k test
cd ${WORK:-/tmp/dns-front-feed}; D=${WORK:-/tmp/dns-front-feed}/run/memrds100000
IP=127.0.22.12 python3 gen.py 100000 $D/lds/lds.json --no-dns --rds
setsid /work/main/.venv/bin/envoy -c $D/bootstrap.yaml --use-dynamic-base-id --log-level warn --concurrency 2 > $D/envoy.log 2>&1 < /dev/null & echo $! > run/envoy100k.pid
