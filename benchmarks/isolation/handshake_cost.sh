#!/bin/bash
# CPU per new mTLS connection at the terminator and at the sidecar, resumed vs full
# handshake (lab.py's default; ISO_RESUME=1 turns resumption on), 1,000 connections of one query each (connect.py), after lab.py up.
set -u
WORK=${WORK:-/tmp/isolation-lab}
PY=/work/main/.venv/bin/python
HERE=$(cd "$(dirname "$0")" && pwd)
pid() { $PY -c "import json,sys;print(json.load(open('$WORK/pids.json'))[sys.argv[1]])" "$1"; }
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
tick=$(getconf CLK_TCK)
T=$(pid terminator) S=$(pid sidecar-a)
for mode in resume full; do
  if [ $mode = resume ]; then export ISO_RESUME=1; else unset ISO_RESUME; fi
  PYTHONPATH=$HERE/../.. $PY $HERE/lab.py add-tenants --tenants 2
  sleep 1
  t0=$(cpu $T) s0=$(cpu $S)
  r=$(ip netns exec iso-a $PY $HERE/connect.py 127.0.0.1 15054 1000)
  t1=$(cpu $T) s1=$(cpu $S)
  echo "$mode: $r | terminator $(( (t1 - t0) * 1000 / tick )) ms, sidecar $(( (s1 - s0) * 1000 / tick )) ms CPU per 1000 connections"
done
unset ISO_RESUME
PYTHONPATH=$HERE/../.. $PY $HERE/lab.py add-tenants --tenants 2
