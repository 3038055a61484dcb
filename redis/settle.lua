-- Settlement: replaces requests' reservations with what they really used,
-- whatever way they ended, and adds the usage records.  One call settles
-- all the requests of one tenant and day that one gateway worker finished
-- in one turn of its event loop.
--
-- KEYS[1] llm:{t}:win            KEYS[2] llm:{t}:spend:d:<day>
-- KEYS[3] llm:{t}:spend:m:<month>  KEYS[4] llm:{t}:usage:<day>
-- KEYS[5] llm:{t}:settled:<day>  ids of unmetered requests already recorded
-- KEYS[6] llm:{t}:inflight
-- ARGV: usage_ttl, n, then n times: id, used_tokens, cost,
--       record_prefix ("<model>|<backend>"), prompt, completion,
--       mode ("m": admitted by admit.lua, "u": served unmetered; a "c"
--       after it: answered from the response cache)
--
-- A metered request's reservation is read from the in-flight record
-- admit.lua wrote, so a request whose admission was refused or never ran
-- releases nothing, and a command sent twice (a retry after a lost reply)
-- counts each request once.

local n = tonumber(ARGV[2])
local metered, unmetered, valid = {}, {}, {}

for i = 0, n - 1 do
    local b = 3 + i * 7
    local r = { id = ARGV[b], utok = tonumber(ARGV[b + 1]),
                cost = tonumber(ARGV[b + 2]), prefix = ARGV[b + 3],
                prompt = tonumber(ARGV[b + 4]),
                completion = tonumber(ARGV[b + 5]), rtok = 0, rcost = 0,
                cached = string.sub(ARGV[b + 6], 2, 2) == 'c' }
    if string.sub(ARGV[b + 6], 1, 1) == 'u' then
        unmetered[#unmetered + 1] = r
    else
        metered[#metered + 1] = r
    end
end

local function ids(list)
    local out = {}
    for i, r in ipairs(list) do out[i] = r.id end
    return out
end

if #metered > 0 then
    local held = redis.call('HMGET', KEYS[6], unpack(ids(metered)))
    local done = {}
    for i, r in ipairs(metered) do
        if held[i] then
            local a, b, c = string.match(held[i], '^(%d+):(%d+):(%d+)$')
            r.rtok, r.rcost, r.admitted = tonumber(a), tonumber(b), c
            done[#done + 1] = r.id
            valid[#valid + 1] = r
        end
    end
    if #done > 0 then
        redis.call('HDEL', KEYS[6], unpack(done))
    end
end

if #unmetered > 0 then
    local seen = redis.call('SMISMEMBER', KEYS[5], unpack(ids(unmetered)))
    local new = {}
    for i, r in ipairs(unmetered) do
        if seen[i] == 0 then
            new[#new + 1] = r.id
            valid[#valid + 1] = r
        end
    end
    if #new > 0 then
        redis.call('SADD', KEYS[5], unpack(new))
        redis.call('EXPIRE', KEYS[5], 172800)
    end
end

if #valid == 0 then
    return 0
end

-- the token window: a reservation whose second is still in it becomes
-- the real use
local t = redis.call('TIME')
local oldest = tonumber(t[1]) - 60
local delta = {}
for _, r in ipairs(valid) do
    if r.rtok > 0 and r.admitted then
        local s = math.floor(tonumber(r.admitted) / 1000)
        if s >= oldest then
            delta[s] = (delta[s] or 0) + r.utok - r.rtok
        end
    end
end
for s, d in pairs(delta) do
    if d ~= 0 and redis.call('HEXISTS', KEYS[1], 't:' .. s) == 1 then
        redis.call('HINCRBY', KEYS[1], 't:' .. s, d)
    end
end

-- money and usage, summed per batch
local rcost, cost, rec = 0, 0, {}
for _, r in ipairs(valid) do
    rcost = rcost + r.rcost
    cost = cost + r.cost
    local u = rec[r.prefix]
    if not u then
        u = { 0, 0, 0, 0, 0 }
        rec[r.prefix] = u
    end
    u[1] = u[1] + 1
    u[2] = u[2] + r.prompt
    u[3] = u[3] + r.completion
    u[4] = u[4] + r.cost
    if r.cached then
        u[5] = u[5] + 1
    end
end

for _, k in ipairs({ KEYS[2], KEYS[3] }) do
    if rcost ~= 0 then
        redis.call('HINCRBY', k, 'reserved', -rcost)
    end
    redis.call('HINCRBY', k, 'settled', cost)
end

for prefix, u in pairs(rec) do
    local p = prefix .. '|'
    redis.call('HINCRBY', KEYS[4], p .. 'requests', u[1])
    redis.call('HINCRBY', KEYS[4], p .. 'prompt_tokens', u[2])
    redis.call('HINCRBY', KEYS[4], p .. 'completion_tokens', u[3])
    redis.call('HINCRBY', KEYS[4], p .. 'cost_micro_usd', u[4])
    if u[5] > 0 then
        redis.call('HINCRBY', KEYS[4], p .. 'cached', u[5])
    end
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[1]))

return #valid
