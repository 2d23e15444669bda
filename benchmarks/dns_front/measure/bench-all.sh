#!/bin/bash
# all dnsperf runs (10 s, -Q 2000 each); components must be running (start.sh or startup.sh)
cd ${WORK:-/tmp/dns-front}; R=run
uptime
./bench.sh "envoy direct, table"        127.0.18.1 q-table.txt udp $R/envoy.pid
./bench.sh "front->envoy, table"        127.0.18.4 q-table.txt udp $R/dnsdist.pid
./bench.sh "unbound direct, table"      127.0.18.2 q-table.txt udp $R/unbound.pid
./bench.sh "unbound direct, forwarded"  127.0.18.2 q-fwd.txt   udp $R/unbound.pid
./bench.sh "front->unbound, forwarded"  127.0.18.4 q-fwd.txt   udp $R/dnsdist.pid
./bench.sh "unbound direct, table"      127.0.18.2 q-table.txt tcp $R/unbound.pid
./bench.sh "front->unbound, table"      127.0.18.4 q-table.txt tcp $R/dnsdist.pid
./bench.sh "unbound direct, forwarded"  127.0.18.2 q-fwd.txt   tcp $R/unbound.pid
./bench.sh "front->unbound, forwarded"  127.0.18.4 q-fwd.txt   tcp $R/dnsdist.pid
uptime
