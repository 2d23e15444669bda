#!/usr/bin/env python3
"""twophase.py FRONT_IP: remove NAME in two LDS updates (1: out of the body, still in Envoy's DNS table;
2: after 2.5 s, out of the DNS table too); logs every answer change of the front; expect no NXDOMAIN."""
import subprocess
import sys
import time

sys.argv += ['127.0.22.7'] if len(sys.argv) < 2 else []
FRONT, NAME = sys.argv[1], 'added.ns1.svc.cluster.local'
exec(open('${WORK:-/tmp/dns-front-feed}/flip.py').read().split('n, name, op')[0].split('import os;')[0])   # a_query()
g = lambda *x: subprocess.run(['python3', '${WORK:-/tmp/dns-front-feed}/gen.py', '10000', '${WORK:-/tmp/dns-front-feed}/lds/lds.json', *x], check=True, capture_output=True)
g('--extra', NAME); time.sleep(2.5)
last = a_query(FRONT, NAME); print('start', last); t0 = time.monotonic(); g('--dns-only', NAME); print('0 ms: update 1 (body without NAME)')
step2 = False
while time.monotonic() - t0 < 6:
    if not step2 and time.monotonic() - t0 > 2.5: g(); step2 = True; print(f'{(time.monotonic()-t0)*1000:.0f} ms: update 2 (DNS table without NAME)')
    v = a_query(FRONT, NAME)
    if v != last: print(f'{(time.monotonic()-t0)*1000:.0f} ms: {last} -> {v}'); last = v
    time.sleep(0.01)
print('end', last)
