"""The tenant resolver's policy gate: an unbound python module (stdlib only).

unbound loads this file (``python-script``) with the constants below filled in by
``translate/unbound.py``. Names that reach it passed the RPZ (no whitelist or blacklist
entry denied them) and are outside the cluster zone. For each, it asks the control plane
once per decision lifetime and type over a unix socket (``policy_client.serve_gate``; the
control plane answers every type from one decision unless the server decided per type)
and keeps the answer in a dict, so a repeated name costs a dict lookup in unbound's process, no round
trip. A denied name is answered NXDOMAIN here and never forwarded. The control plane
answers within the policy's timeout (with the failure mode when the server is slower); the
gate waits ``GRACE`` more for the control plane itself (its event loop on a loaded machine),
and only when even that passes does the failure mode decide here, for one second.

unbound answers from its message cache before any module runs, so an allowed answer would
otherwise be served for the record's TTL, past its decision's lifetime: when the iterator
hands the answer back (``MODULE_EVENT_MODDONE``), its TTLs are capped to what is left of
the decision and it is stored again in the cache. The cache, the clients (the DNS front's
cache included) and prefetch then come back to the gate when the decision expires.
"""
# ruff: noqa
import socket
import threading
import time

TENANT = 'dns-policy'
SOCKET = '/var/lib/dns-controlplane/resolvers/policy-gate.sock'
TIMEOUT = 0.2
GRACE = 0.25
FAILURE_OPEN = False
MAX_ENTRIES = 100000

_cache = {}
_local = threading.local()


def _ask(name, qtype):
    for attempt in (0, 1):
        sock = getattr(_local, "sock", None)
        try:
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(TIMEOUT + GRACE)
                sock.connect(SOCKET)
                _local.sock = sock
            sock.sendall(("%s %s %s\n" % (TENANT, name, qtype)).encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(256)
                if not chunk:
                    raise OSError("closed")
                buf += chunk
            verdict, ttl = buf.decode().split()
            return verdict == "allow", float(ttl)
        except (OSError, ValueError):
            if sock is not None:
                sock.close()
            _local.sock = None
            if attempt:
                break
    return FAILURE_OPEN, 1.0


def allowed(name, qtype):
    now = time.monotonic()
    hit = _cache.get((name, qtype))
    if hit is not None and hit[1] > now:
        return hit[0]
    allow, ttl = _ask(name, qtype)
    if len(_cache) >= MAX_ENTRIES:
        _cache.clear()
    _cache[(name, qtype)] = (allow, now + ttl)
    return allow


def left(name, qtype):
    """Whole seconds left of the decision about ``name`` (0 when there is none)."""
    hit = _cache.get((name, qtype))
    return max(0, int(hit[1] - time.monotonic())) if hit is not None else 0


def cap_ttls(qstate, cap):
    """Cap the answer's TTLs (relative here) to ``cap`` and store it again in the cache."""
    msg = qstate.return_msg
    if msg is None or msg.rep is None:
        return
    rep = msg.rep
    for i in range(rep.rrset_count):
        data = rep.rrsets[i].entry.data
        if data.ttl > cap:
            data.ttl = cap
        for j in range(data.count + data.rrsig_count):
            if data.rr_ttl[j] > cap:
                data.rr_ttl[j] = cap
    if rep.ttl > cap:
        rep.ttl = cap
    if rep.prefetch_ttl > cap - cap // 10:
        rep.prefetch_ttl = cap - cap // 10
    invalidateQueryInCache(qstate, qstate.qinfo)
    storeQueryInCache(qstate, qstate.qinfo, rep, 0)


def init_standard(id, env):
    return True


def deinit(id):
    return True


def inform_super(id, qstate, superqstate, qdata):
    return True


def operate(id, event, qstate, qdata):
    if event in (MODULE_EVENT_NEW, MODULE_EVENT_PASS):
        name = qstate.qinfo.qname_str.rstrip(".").lower()
        qtype = qstate.qinfo.qtype_str
        if name and not allowed(name, qtype):
            msg = DNSMessage(qstate.qinfo.qname_str, qstate.qinfo.qtype,
                             qstate.qinfo.qclass, PKT_QR | PKT_RA)
            if not msg.set_return_msg(qstate):
                qstate.ext_state[id] = MODULE_ERROR
                return True
            qstate.return_rcode = RCODE_NXDOMAIN
            qstate.ext_state[id] = MODULE_FINISHED
            return True
        qstate.ext_state[id] = MODULE_WAIT_MODULE
        return True
    if event == MODULE_EVENT_MODDONE:
        name = qstate.qinfo.qname_str.rstrip(".").lower()
        if name:
            cap_ttls(qstate, left(name, qstate.qinfo.qtype_str))
        qstate.ext_state[id] = MODULE_FINISHED
        return True
    qstate.ext_state[id] = MODULE_ERROR
    return True
