#!/bin/sh
# start Envoy 1.40 with file-based LDS (lds/lds.json); pid in run/envoy.pid
cd ${WORK:-/tmp/dns-front-feed}; setsid /work/main/.venv/bin/envoy -c envoy-bootstrap.yaml --use-dynamic-base-id --log-level ${LOG:-warn} > run/envoy.log 2>&1 < /dev/null & echo $! > run/envoy.pid
