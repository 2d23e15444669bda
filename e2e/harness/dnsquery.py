"""One DNS query over UDP to a server on 127.0.0.1, as the e2e tests and benchmarks send it."""

from __future__ import annotations

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype


def query(port: int, name: str, rdtype: str = "A", timeout: float = 1.0
          ) -> tuple[str, list[str]]:
    """(rcode, sorted answer texts) from the DNS server on 127.0.0.1:port over UDP."""
    q = dns.message.make_query(name, rdtype)
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=timeout)
    answers: list[str] = []
    for rrset in r.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rdtype):
            answers.extend(rd.to_text() for rd in rrset)
    return dns.rcode.to_text(r.rcode()), sorted(answers)
