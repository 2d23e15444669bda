#!/usr/bin/env python3
"""stall.py FRONT N GENARGS...: query FRONT every 5 ms for 4 s; after 1 s change the set (gen.py N ... GENARGS);
print max/p99 query latency (the synchronous parse of the new set blocks the front's event loop)."""
import subprocess
import sys
import threading
import time

exec(open('${WORK:-/tmp/dns-front-feed}/flip.py').read().split('n, name, op')[0].split('import os;')[0])
front, n, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
lat = []
def change(): time.sleep(1); subprocess.run(['python3', '${WORK:-/tmp/dns-front-feed}/gen.py', n, *extra], capture_output=True)
threading.Thread(target=change).start()
t_end = time.monotonic() + 4
while time.monotonic() < t_end:
    t = time.monotonic(); a_query(front, 'x.cluster.local', timeout=2); lat.append((time.monotonic() - t) * 1000); time.sleep(0.005)
lat.sort(); print(f'{front} N={n}: {len(lat)} queries, p50 {lat[len(lat)//2]:.2f} ms, p99 {lat[int(len(lat)*.99)]:.2f} ms, max {lat[-1]:.1f} ms')
