#!/bin/sh
# like mem-envoy.sh but the route config (with the body) is an RDS resource (file rds/rds.json); updates touch only RDS
N=$1; D=${WORK:-/tmp/dns-front-feed}/run/memrds$N; mkdir -p $D/lds; cd ${WORK:-/tmp/dns-front-feed}
IP=127.0.22.12 python3 gen.py $N $D/lds/lds.json --no-dns --rds >/dev/null
sed "s|${WORK:-/tmp/dns-front-feed}/lds|$D/lds|g; s|127.0.22.1,|127.0.22.12,|" envoy-bootstrap.yaml > $D/bootstrap.yaml
setsid /work/main/.venv/bin/envoy -c $D/bootstrap.yaml --use-dynamic-base-id --log-level warn --concurrency 2 > $D/envoy.log 2>&1 < /dev/null & P=$!
sleep 4; echo "RDS N=$N idle:      $(./mem.sh $P)"; curl -s -o /dev/null -w "%{http_code} %{size_download}B\n" http://127.0.22.12:18080/envoy-set
for i in $(seq 1 ${2:-3}); do IP=127.0.22.12 python3 gen.py $N $D/lds/lds.json --no-dns --rds --rds-only --extra u$i.ns1.svc.cluster.local >/dev/null; sleep 3; done
echo "RDS N=$N ${2:-3} updates: $(./mem.sh $P)"; curl -s http://127.0.22.12:18080/envoy-set | tail -1
curl -s 127.0.22.12:19911/stats | grep -E '^(listener_manager.lds.update_success|http.envoy_set.rds.envoy_set.update_success)'
kill $P
