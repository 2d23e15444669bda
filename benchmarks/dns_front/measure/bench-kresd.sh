#!/bin/bash
cd ${WORK:-/tmp/dns-front}; R=run; uptime
./bench.sh "envoy direct, table"        127.0.18.1 q-table.txt udp $R/envoy.pid
./bench.sh "kresd->envoy, table"        127.0.18.7 q-table.txt udp $R/kresd.pid
./bench.sh "kresd->envoy, table"        127.0.18.7 q-table.txt tcp $R/kresd.pid
./bench.sh "unbound direct, forwarded"  127.0.18.2 q-fwd.txt   udp $R/unbound.pid
./bench.sh "kresd->unbound, forwarded"  127.0.18.7 q-fwd.txt   udp $R/kresd.pid
./bench.sh "kresd->unbound, forwarded"  127.0.18.7 q-fwd.txt   tcp $R/kresd.pid
uptime
