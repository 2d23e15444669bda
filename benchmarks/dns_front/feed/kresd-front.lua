-- knot-resolver 5.6 front (as ${WORK:-/tmp/dns-front}/cfg/kresd-front.lua) + the (name,type) set pulled from Envoy's loopback
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
local http_request = require('http.request')

local envoy_set = {}          -- [qtype] = { [wire name] = true }; replaced whole, never mutated
local set_etag, set_names = nil, 0
local busy = false

local set_text = {}           -- ['TYPE name'] = true, to find (name,type) pairs that left the set
local function parse(body)
  local t, txt, n = {}, {}, 0
  for ty, name in body:gmatch('(%w+) (%S+)\n') do
    local qt = kres.type[ty]
    if qt then
      local s = t[qt]; if not s then s = {}; t[qt] = s end
      s[todname(name)] = true; txt[ty .. ' ' .. name] = true; n = n + 1
    end
  end
  return t, txt, n
end

local function refresh()
  if busy then return end
  busy = true
  local ok, err = pcall(function()
    local c0 = os.clock()
    local req = http_request.new_from_uri(SET_URL)
    req.follow_redirects = false                      -- Envoy adds 'location' to a direct_response 304
    if set_etag then req.headers:upsert('if-none-match', set_etag) end
    local headers, stream = req:go(2)                 -- 2 s timeout; yields to the event loop while waiting
    if not headers then error('fetch: ' .. tostring(stream)) end
    local status = headers:get(':status')
    if status == '304' then stream:shutdown(); return end   -- unchanged: nothing transferred, nothing parsed
    if status ~= '200' then stream:shutdown(); error('fetch: status ' .. status) end
    local body, berr = stream:get_body_as_string(2)
    if not body then error('body: ' .. tostring(berr)) end
    local etag = headers:get('etag')
    local c1 = os.clock()
    local t, txt, n = parse(body)
    local old = set_text
    envoy_set, set_text, set_etag, set_names = t, txt, etag, n   -- swap; the last good set stays on any error
    -- kresd stashes Envoy's answers in its cache even with NO_CACHE (NO_CACHE only skips the lookup): a name that
    -- leaves the set would be answered from that cache until TTL; drop the cached records of names that left
    local gone = 0
    for key in pairs(old) do
      if not txt[key] then
        local ty, name = key:match('(%w+) (%S+)')
        cache.clear(name, true, kres.type[ty]); gone = gone + 1
      end
    end
    if gone > 0 then print('[envoy-set] cleared cache of ' .. gone .. ' (name,type) pairs that left the set') end
    print(string.format('[envoy-set] %.3f applied etag=%s names=%d bytes=%d cpu fetch=%.1fms parse=%.1fms',
      require('cqueues').monotime(), tostring(etag), n, #body, (c1 - c0) * 1000, (os.clock() - c1) * 1000))
  end)
  busy = false
  if not ok then print(string.format('[envoy-set] %.3f keep last set (names=%d): %s',
    require('cqueues').monotime(), set_names, tostring(err))) end
end
event.after(0, function() worker.coroutine(refresh) end)
event.recurrent(1 * sec, function() worker.coroutine(refresh) end)

local function to_envoy(_, qry)
  local s = envoy_set[qry.stype]
  if s and s[qry:name()] then return true end
  return nil
end
policy.add(function(req, qry) if to_envoy(req, qry) then return policy.FLAGS({'NO_CACHE', 'NO_0X20'}) end end)
policy.add(function(req, qry) if to_envoy(req, qry) then return policy.STUB(ENVOY) end end)
policy.add(policy.all(policy.STUB(RESOLVER)))
