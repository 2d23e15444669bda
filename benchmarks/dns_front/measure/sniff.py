import socket

s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.18.9",10099)); s.settimeout(5)
try:
    d,a=s.recvfrom(4096); print("ARCOUNT", int.from_bytes(d[10:12],"big"), "len", len(d))
except Exception as e: print("none", e)
