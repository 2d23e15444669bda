#!/bin/sh
# The negative proofs (docs/resolver-isolation.md): run after `lab.py up`, as root.
# A process in iso-x (a pod that is nobody's sidecar) tries every way in; then the same
# with kdig (Knot's client, an implementation we did not write); then tenant b's own
# sidecar asked for tenant a's name; then the terminator's counters.
set -u
WORK=${WORK:-/tmp/isolation-lab}
PY=${PY:-/work/main/.venv/bin/python}
HERE=$(dirname "$0")
P=$WORK/pki
ip netns exec iso-x "$PY" "$HERE/probe.py" suite; status=$?
echo "--- kdig from iso-x (answer or error, one line each)"
k() { out=$(ip netns exec iso-x kdig +tls +tls-ca="$P/ca.crt" +tls-hostname=tenant-resolver.dns-controlplane \
      +retry=0 +timeout=2 @10.251.0.1 -p 853 a.test TXT "$@" 2>&1); rc=$?
      # kdig dies of SIGPIPE (141) when the server has closed the connection before the query
      echo "exit $rc: $(echo "$out" | grep -E "status|resolver of|WARNING" | head -2 | tr '\n' ' ')"; }
printf 'no cert:         '; k +tls-sni=a.tenant-resolver.dns-controlplane
printf "b's cert:        "; k +tls-sni=a.tenant-resolver.dns-controlplane +tls-certfile="$P/b.crt" +tls-keyfile="$P/b.key"
printf "expired a cert:  "; k +tls-sni=a.tenant-resolver.dns-controlplane +tls-certfile="$P/a-expired.crt" +tls-keyfile="$P/a-expired.key"
printf "a's cert:        "; k +tls-sni=a.tenant-resolver.dns-controlplane +tls-certfile="$P/a.crt" +tls-keyfile="$P/a.key"
echo "--- tenant b's pod through its own sidecar (front 127.0.0.1:53 and hop 15054): a's name"
ip netns exec iso-b dig +tries=1 +time=2 @127.0.0.1 a.test TXT | grep -E "status|resolver of"
ip netns exec iso-b dig +tcp +tries=1 +time=2 @127.0.0.1 -p 15054 a.test TXT | grep -E "status|resolver of"
ip netns exec iso-b dig +tries=1 +time=2 @127.0.0.1 b.test TXT +short
echo "--- terminator counters"
ip netns exec iso-res curl -s 127.0.0.1:9901/stats | grep -E "listener.10.251.0.1_853.(ssl\.(fail|handshake|no_cert)|downstream_cx_total|no_filter_chain)"
exit $status
