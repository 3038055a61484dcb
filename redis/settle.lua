-- Settlement: replaces requests' reservations with what they really used,
-- whatever way they ended, and adds the usage records.  One call settles
-- all the requests of one tenant and day that one gateway worker finished
-- in one turn of its event loop.
--
-- KEYS[1] llm:{t}:win            KEYS[2] llm:{t}:spend:d:<day>
-- KEYS[3] llm:{t}:spend:m:<month>  KEYS[4] llm:{t}:usage:<day>
-- KEYS[5] llm:{t}:settled:<day>  ids of requests settled without an
--                                in-flight record
-- KEYS[6] llm:{t}:inflight
-- KEYS[7] llm:{t}:swept:<day>    ids whose records sweep.lua released
--                                (named after KEYS[6] when not given)
-- ARGV: usage_ttl, n, then n times: id, used_tokens, cost,
--       record_prefix ("<model>|<backend>"), prompt, completion,
--       mode ("m": admitted by admit.lua, "u": served unmetered, "k":
--       the admission's reply was lost, so it may have been recorded; a
--       "c" after it: answered from the response cache)
--
-- A metered request's reservation is read from the in-flight record
-- admit.lua wrote, so a request whose admission was refused or never ran
-- releases nothing, and a command sent twice (a retry after a lost reply)
-- counts each request once.  A cost written with an exponent (1e+14, by
-- an older admit.lua) is not read: its HINCRBY failed, so it reserved
-- nothing.  A request that outlived its record (the sweeper released it)
-- is still charged.  A spend key that expired is written again with the
-- TTL admit.lua gives it, and no reservation is taken off it.  A record
-- that cannot be read releases nothing but
-- does not stop the others: its request is still charged, and its id is
-- returned.  The in-flight records are deleted last, after every write
-- that can fail.
--
-- Returns the number of requests settled, or {settled, malformed, id of
-- each malformed record...} when some records could not be read.

local n = tonumber(ARGV[2])
local swept = KEYS[7] or (string.sub(KEYS[6], 1, -9) .. 'swept:'
                          .. (string.match(KEYS[2], ':(%d+)$') or ''))
local metered, unmetered, valid, bad = {}, {}, {}, {}

-- a whole number a double holds exactly, or nil
local function int(v)
    v = tonumber(v)
    if v and v == math.floor(v) and v > -9007199254740992
       and v < 9007199254740992
    then
        return v
    end
    return nil
end

local function fmt(v)
    return string.format('%.0f', v)
end

-- a key of the wrong type would fail a write halfway: fail before any

for _, k in ipairs({ KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6],
                     swept })
do
    local want = (k == KEYS[5] or k == swept) and 'set' or 'hash'
    local ty = redis.call('TYPE', k)['ok']
    if ty ~= 'none' and ty ~= want then
        return redis.error_reply('WRONGTYPE ' .. k .. ' is a ' .. ty)
    end
end

for i = 0, n - 1 do
    local b = 3 + i * 7
    local mode = ARGV[b + 6]
    local r = { id = ARGV[b], utok = int(ARGV[b + 1]) or 0,
                cost = int(ARGV[b + 2]) or 0, prefix = ARGV[b + 3],
                prompt = int(ARGV[b + 4]) or 0,
                completion = int(ARGV[b + 5]) or 0, rtok = 0, rcost = 0,
                kind = string.sub(mode, 1, 1),
                cached = string.sub(mode, 2, 2) == 'c' }
    if r.kind == 'u' then
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

-- reservations: a record present is released; one whose reply was lost
-- and that was never recorded is settled like an unmetered request

local done, seen, late = {}, {}, {}

if #metered > 0 then
    local held = redis.call('HMGET', KEYS[6], unpack(ids(metered)))
    for i, r in ipairs(metered) do
        if held[i] then
            local a, b, c = string.match(held[i],
                                         '^([^:]+):(-?%d+):(-?%d+)')
            a, b, c = int(a), int(b), int(c)
            if a and b and c then
                r.rtok, r.rcost, r.admitted = a, b, c
            else
                bad[#bad + 1] = r.id
            end
            done[#done + 1] = r.id
            valid[#valid + 1] = r
            if r.kind == 'k' then
                seen[#seen + 1] = r.id
            end
        elseif r.kind == 'k' and (r.cost ~= 0 or r.utok ~= 0) then
            -- never recorded, yet served: as if unmetered (a 503 that
            -- used nothing is not a request to record)
            unmetered[#unmetered + 1] = r
        elseif redis.call('SISMEMBER', swept, r.id) == 1 then
            late[#late + 1] = r.id
            valid[#valid + 1] = r
        end
    end
end

for _, r in ipairs(unmetered) do
    if redis.call('SISMEMBER', KEYS[5], r.id) == 0 then
        seen[#seen + 1] = r.id
        valid[#valid + 1] = r
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
    if r.rtok ~= 0 and r.admitted then
        local s = math.floor(r.admitted / 1000)
        if s >= oldest then
            delta[s] = (delta[s] or 0) + r.utok - r.rtok
        end
    end
end
for s, d in pairs(delta) do
    local f = 't:' .. fmt(s)
    if d ~= 0 and redis.call('HEXISTS', KEYS[1], f) == 1 then
        redis.call('HINCRBY', KEYS[1], f, fmt(d))
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

-- a spend key that expired (a settlement after its day) has no
-- reservation left to release, and the one written again gets the TTL
-- admit.lua gives it
for i, k in ipairs({ KEYS[2], KEYS[3] }) do
    local exists = redis.call('EXISTS', k) == 1
    if rcost ~= 0 and exists then
        redis.call('HINCRBY', k, 'reserved', fmt(-rcost))
    end
    redis.call('HINCRBY', k, 'settled', fmt(cost))
    if redis.call('TTL', k) < 0 then
        redis.call('EXPIRE', k, i == 1 and 172800 or 5356800)
    end
end

for prefix, u in pairs(rec) do
    local p = prefix .. '|'
    redis.call('HINCRBY', KEYS[4], p .. 'requests', fmt(u[1]))
    redis.call('HINCRBY', KEYS[4], p .. 'prompt_tokens', fmt(u[2]))
    redis.call('HINCRBY', KEYS[4], p .. 'completion_tokens', fmt(u[3]))
    redis.call('HINCRBY', KEYS[4], p .. 'cost_micro_usd', fmt(u[4]))
    if u[5] > 0 then
        redis.call('HINCRBY', KEYS[4], p .. 'cached', fmt(u[5]))
    end
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[1]))

if #seen > 0 then
    redis.call('SADD', KEYS[5], unpack(seen))
    redis.call('EXPIRE', KEYS[5], 172800)
end

if #late > 0 then
    redis.call('SREM', swept, unpack(late))
end

if #done > 0 then
    redis.call('HDEL', KEYS[6], unpack(done))
end

if #bad == 0 then
    return #valid
end

local out = {#valid, #bad}
for i, id in ipairs(bad) do
    out[i + 2] = id
end
return out
