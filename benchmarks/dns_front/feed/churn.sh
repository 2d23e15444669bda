#!/bin/sh
# 10 changes of the 10k set (1.5 s apart) -> private memory of kresd and dnsdist after each few
cd ${WORK:-/tmp/dns-front-feed}; for i in $(seq 1 10); do python3 gen.py 10000 lds/lds.json --extra churn$i.ns1.svc.cluster.local > /dev/null; sleep 1.5
  [ $((i % 5)) = 0 ] && echo "after $i changes: kresd $(./mem.sh $(cat run/kresd.pid)) | dnsdist $(./mem.sh $(cat run/dnsdist.pid))"; done; true
