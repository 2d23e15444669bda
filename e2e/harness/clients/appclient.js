// appclient.js: Node's two resolvers, one JSON line per lookup.
//
//   node appclient.js lookup|cares TYPE NAME [TYPE NAME...]
//
// lookup: dns.lookup (getaddrinfo, glibc, in libuv's thread pool) with {all: true},
//   TYPE ADDR (family 0), A (family 4) or AAAA (family 6).
// cares: dns.promises.Resolver (c-ares: reads /etc/resolv.conf, search list and ndots;
//   retries over TCP on a truncated answer): A resolve4, AAAA resolve6, SRV resolveSrv,
//   TXT resolveTxt (chunks joined), MX resolveMx, PTR reverse (NAME is an IP),
//   CNAME resolveCname.
// Lines: {"name","type","ok","addresses"|"records"} or {"ok":false,"code":err.code,"detail"}.
'use strict';
const dns = require('dns');

const trim = (n) => n.replace(/\.$/, '');

async function cares(resolver, type, name) {
  switch (type) {
    case 'A': return { addresses: await resolver.resolve4(name) };
    case 'AAAA': return { addresses: await resolver.resolve6(name) };
    case 'SRV': return { records: (await resolver.resolveSrv(name)).map(
      (s) => `${s.priority} ${s.weight} ${s.port} ${trim(s.name)}`) };
    case 'TXT': return { records: (await resolver.resolveTxt(name)).map((c) => c.join('')) };
    case 'MX': return { records: (await resolver.resolveMx(name)).map(
      (m) => `${m.priority} ${trim(m.exchange)}`) };
    case 'PTR': return { records: (await resolver.reverse(name)).map(trim) };
    case 'CNAME': return { records: (await resolver.resolveCname(name)).map(trim) };
    default: throw Object.assign(new Error(`unsupported type ${type}`), { code: 'EUSAGE' });
  }
}

async function lookup(type, name) {
  const family = { ADDR: 0, A: 4, AAAA: 6 }[type];
  if (family === undefined) {
    throw Object.assign(new Error(`unsupported type ${type}`), { code: 'EUSAGE' });
  }
  const got = await dns.promises.lookup(name, { all: true, family, verbatim: true });
  return { addresses: got.map((a) => a.address) };
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  if (!['lookup', 'cares'].includes(mode) || args.length % 2 !== 0) {
    process.stderr.write('usage: node appclient.js lookup|cares TYPE NAME [TYPE NAME...]\n');
    process.exit(2);
  }
  const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 2 });
  for (let i = 0; i < args.length; i += 2) {
    const [type, name] = [args[i], args[i + 1]];
    let line;
    try {
      const got = mode === 'cares' ? await cares(resolver, type, name) : await lookup(type, name);
      line = { name, type, ok: true, ...got };
    } catch (err) {
      line = { name, type, ok: false, code: err.code || 'EOTHER', detail: err.message };
    }
    process.stdout.write(JSON.stringify(line) + '\n');
  }
}

main();
