# loader variants: the control plane writes one name per line; the front's Lua reads it at start
import sys

n = int(sys.argv[1])
with open(f"names-A-{n}.txt", "w") as f:
    for i in range(n):
        f.write(f"svc{i}.ns{i%100}.svc.cluster.local.\n")
src = open("${WORK:-/tmp/dns-front}/cfg/dnsdist-front.conf").read().replace("127.0.18.4:10053", "127.0.18.11:10053")
src += f'''local big = newDNSNameSet()
for line in io.lines("${WORK:-/tmp/dns-front}/scale/names-A-{n}.txt") do big:add(newDNSName(line)) end
addAction(AndRule({{QTypeRule(DNSQType.A), QNameSetRule(big)}}), PoolAction("envoy"))
'''
# put the loader rule before the catch-all
src = src.replace('addAction(AllRule(), PoolAction("resolver"))\n', '') + 'addAction(AllRule(), PoolAction("resolver"))\n'
open(f"dnsdist-file-{n}.conf", "w").write(src)
k = open("${WORK:-/tmp/dns-front}/cfg/kresd-front.lua").read().replace("'127.0.18.7'", "'127.0.18.12'").replace("${WORK:-/tmp/dns-front}/run/kresd'", "${WORK:-/tmp/dns-front}/scale/kc'")
head, tail = k.split("local function to_envoy")
head += f"do local A = envoy_set[kres.type.A]; for line in io.lines('${WORK:-/tmp/dns-front}/scale/names-A-{n}.txt') do A[todname(line)] = true end end\n"
open(f"kresd-file-{n}.lua", "w").write(head + "local function to_envoy" + tail)
