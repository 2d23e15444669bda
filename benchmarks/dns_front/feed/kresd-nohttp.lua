-- BASELINE (no http client, static set): knot-resolver 5.6 front (as ${WORK:-/tmp/dns-front}/cfg/kresd-front.lua) + the (name,type) set pulled from Envoy's loopback
-- HTTP listener every second (lua-http over cqueues inside worker.coroutine: non-blocking for the resolver)
net.listen(os.getenv('KRESD_IP') or '127.0.22.7', 10053, { kind = 'dns' })   -- in a pod: 127.0.0.1:53
net.ipv6 = false
cache.open(8 * MB, 'lmdb://' .. (os.getenv('KRESD_CACHE') or '${WORK:-/tmp/dns-front-feed}/run/kresd'))
modules.load('serve_stale < cache')
modules.unload('detect_time_skew'); modules.unload('priming'); modules.unload('ta_signal_query'); modules.unload('ta_sentinel')
trust_anchors.remove('.')

local ENVOY = '127.0.22.1@10053'
local RESOLVER = '127.0.22.2@10053'
local SET_URL = os.getenv('SET_URL') or 'http://127.0.22.1:18080/envoy-set'
local envoy_set = { [kres.type.A] = { [todname('one.ns1.svc.cluster.local.')] = true } }  -- static, as in ${WORK:-/tmp/dns-front}

local function to_envoy(_, qry)
  local s = envoy_set[qry.stype]
  if s and s[qry:name()] then return true end
  return nil
end
policy.add(function(req, qry) if to_envoy(req, qry) then return policy.FLAGS({'NO_CACHE', 'NO_0X20'}) end end)
policy.add(function(req, qry) if to_envoy(req, qry) then return policy.STUB(ENVOY) end end)
policy.add(policy.all(policy.STUB(RESOLVER)))
