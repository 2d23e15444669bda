#!/usr/bin/env python3
"""flip.py N NAME add|del : rewrite lds/lds.json (N names, NAME added or not) and measure, by polling every 10 ms,
when Envoy's DNS listener (127.0.22.1) and the kresd front (127.0.22.7) change their answer for NAME."""
import random
import socket
import struct
import subprocess
import sys
import time


def a_query(ip, name, port=10053, timeout=0.5):
    qid = random.randint(0, 65535)
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in name.rstrip('.').split('.')) + b'\0' + struct.pack('>HH', 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(timeout)
    try:
        s.sendto(q, (ip, port)); r = s.recv(4096)
    except TimeoutError: return 'timeout'
    finally: s.close()
    rcode = r[3] & 15; an = struct.unpack('>H', r[6:8])[0]
    if rcode or not an: return f'rcode{rcode}/an{an}'
    return socket.inet_ntoa(r[-4:])          # last RR's rdata (A)
import os; FRONT = os.environ.get('FRONT', '127.0.22.7')
n, name, op = int(sys.argv[1]), sys.argv[2], sys.argv[3]
before = {ip: a_query(ip, name) for ip in ('127.0.22.1', FRONT)}
args = ['python3', '${WORK:-/tmp/dns-front-feed}/gen.py', str(n), '${WORK:-/tmp/dns-front-feed}/lds/lds.json'] + (['--extra', name] if op == 'add' else [])
t0 = time.monotonic(); subprocess.run(args, check=True); tw = time.monotonic()
print(f'clock_monotonic at rename ~{tw:.3f} (gen+write {tw-t0:.2f}s); before: {before}')
# every answer change, per server, until kresd gives the final answer (add: Envoy's address; del: unbound's 10.99.99.99)
last = dict(before); final_k = None
while time.monotonic() - tw < 15:
    for ip in ('127.0.22.1', FRONT):
        v = a_query(ip, name)
        if v != last[ip]:
            print(f'  {ip}: {last[ip]} -> {v} after {(time.monotonic()-tw)*1000:.0f} ms from rename'); last[ip] = v
    if op == 'del' and last[FRONT] == '10.99.99.99' and last['127.0.22.1'] != before['127.0.22.1']: break
    if op == 'add' and last[FRONT] == last['127.0.22.1'] != before['127.0.22.1']: break
    time.sleep(0.01)
