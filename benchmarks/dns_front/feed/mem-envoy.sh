#!/bin/sh
# Envoy memory vs direct_response body size: HTTP listener only (gen.py --no-dns), own Envoy on 127.0.22.11
# usage: ./mem-envoy.sh N   -> private memory idle, after 5 fetches, after 3 LDS updates (changed body each time)
N=$1; D=${WORK:-/tmp/dns-front-feed}/run/mem$N; mkdir -p $D/lds; cd ${WORK:-/tmp/dns-front-feed}
IP=127.0.22.11 python3 gen.py $N $D/lds/lds.json --no-dns >/dev/null
sed "s|${WORK:-/tmp/dns-front-feed}/lds|$D/lds|g; s|127.0.22.1,|127.0.22.11,|" envoy-bootstrap.yaml > $D/bootstrap.yaml
setsid /work/main/.venv/bin/envoy -c $D/bootstrap.yaml --use-dynamic-base-id --log-level warn --concurrency 2 $EXTRA > $D/envoy.log 2>&1 < /dev/null & P=$!
sleep 4; echo "N=$N idle:      $(./mem.sh $P)"
for i in 1 2 3 4 5; do curl -s -o /dev/null -w "%{size_download}B %{time_total}s " http://127.0.22.11:18080/envoy-set; done; echo
echo "N=$N fetched:   $(./mem.sh $P)"
for i in $(seq 1 ${2:-3}); do IP=127.0.22.11 python3 gen.py $N $D/lds/lds.json --no-dns --extra u$i.ns1.svc.cluster.local >/dev/null; sleep 3; done
echo "N=$N ${2:-3} updates: $(./mem.sh $P)   cpu(utime+stime ticks)=$(awk '{print $14+$15}' /proc/$P/stat)"
curl -s 127.0.22.11:19911/stats | grep -E '^listener_manager.(lds.update_success|total_listeners_active|total_listeners_draining)'
curl -s 127.0.22.11:19911/memory | tr -d '\n '; echo
sleep ${3:-0}; echo "N=$N +${3:-0}s later: $(./mem.sh $P)"; kill $P
