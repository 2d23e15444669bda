#!/bin/bash
# dig evidence per row of issue 18: Envoy direct vs. the front
# usage: evidence.sh SERVER PORT
S=${1:-127.0.18.4}; P=${2:-10053}
q() { # name type [dig opts]
  local n=$1 t=$2; shift 2
  out=$(dig @$S -p $P $n $t +time=2 +tries=1 "$@" 2>&1)
  st=$(echo "$out" | grep -o 'status: [A-Z]*' | cut -d' ' -f2)
  fl=$(echo "$out" | grep -o 'flags: [a-z ]*;' | head -1 | sed 's/flags: //;s/;//')
  an=$(echo "$out" | grep -o 'ANSWER: [0-9]*' | cut -d' ' -f2)
  opt=$(echo "$out" | grep -q 'OPT PSEUDOSECTION' && echo OPT || echo noOPT)
  soa=$(echo "$out" | awk '/AUTHORITY SECTION/{a=1;next} a&&/SOA/{print "SOA";exit}')
  first=$(echo "$out" | awk '/ANSWER SECTION/{a=1;next} a&&NF==0{exit} a{print $2, $4, $5, $6, $7, $8; exit}')
  err=$(echo "$out" | grep -oE 'timed out|connection refused|Truncated, retrying in TCP mode' | head -1)
  sz=$(echo "$out" | grep -o 'MSG SIZE  rcvd: [0-9]*' | awk '{print $4}')
  printf '%-44s %-5s %-22s %-8s %-18s an=%-3s %-5s %-3s sz=%-5s | %s\n' "$n" "$t" "$*" "${st:--}" "${fl:--}" "${an:--}" "$opt" "${soa:--}" "${sz:--}" "${first}${err:+ [$err]}"
}
q www.example.com TXT
q www.example.com MX
q www.example.com CAA
q www.example.com HTTPS
q _sip._tcp.example.com SRV
q 10.0.96.10.in-addr.arpa PTR
q 34.216.184.93.in-addr.arpa PTR
q one.ns1.svc.cluster.local TXT
q one.ns1.svc.cluster.local AAAA
q v4only.example.com AAAA
q one.ns1.svc.cluster.local A
q one.ns1.svc.cluster.local A +tcp
q www.example.com TXT +tcp
q big.ns1.svc.cluster.local A +noedns +ignore
q big.ns1.svc.cluster.local A +noedns
q big.ns1.svc.cluster.local A +tcp
q long.example.com TXT +noedns +ignore
q long.example.com TXT +tcp
q www.example.com A
q www.example.com A +edns=0
q one.ns1.svc.cluster.local A +edns=0
q nosuch.ns1.svc.cluster.local A
q nosuch.example.com A
q dns-version.cluster.local TXT
q dual.ns1.svc.cluster.local AAAA
q _http._tcp.one.ns1.svc.cluster.local SRV
q ONE.ns1.svc.cluster.local A
q one.ns1.svc.cluster.local ANY
q cluster.local SOA
q cluster.local NS
