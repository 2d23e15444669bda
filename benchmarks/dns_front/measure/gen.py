# generate table-size variants: unbound local-data, dnsdist name sets, kresd name sets (N names, 1 A each + PTR)
import sys

n = int(sys.argv[1])
names = [f"svc{i}.ns{i%100}.svc.cluster.local." for i in range(n)]
ip = lambda i: f"10.{96 + (i >> 16) % 16}.{(i >> 8) & 255}.{i & 255}"
with open(f"unbound-{n}.conf", "w") as f:
    f.write(open("${WORK:-/tmp/dns-front}/cfg/unbound-tenant.conf").read().replace("127.0.18.2@10053", "127.0.18.10@10053")
            .replace("unbound.own.pid", "unbound-scale.pid").replace("unbound.ctl", "unbound-scale.ctl").split("remote-control:")[0])
    for i, nm in enumerate(names):
        f.write(f'    local-data: "{nm} 30 IN A {ip(i)}"\n    local-data-ptr: "{ip(i)} 30 {nm}"\n')
with open(f"dnsdist-{n}.conf", "w") as f:
    f.write(open("${WORK:-/tmp/dns-front}/cfg/dnsdist-front.conf").read().replace("127.0.18.4:10053", "127.0.18.11:10053"))
    f.write("local big = newDNSNameSet()\n")
    for nm in names:
        f.write(f'big:add(newDNSName("{nm}"))\n')
    f.write('addAction(AndRule({QTypeRule(DNSQType.A), QNameSetRule(big)}), PoolAction("envoy"))\n')
with open(f"kresd-{n}.lua", "w") as f:
    src = open("${WORK:-/tmp/dns-front}/cfg/kresd-front.lua").read().replace("'127.0.18.7'", "'127.0.18.12'").replace("${WORK:-/tmp/dns-front}/run/kresd'", "${WORK:-/tmp/dns-front}/scale/kc'")
    head, tail = src.split("local function to_envoy")
    f.write(head)
    f.write("local A = envoy_set[kres.type.A]\n")
    for nm in names:
        f.write(f"A[todname('{nm}')] = true\n")
    f.write("local function to_envoy" + tail)
