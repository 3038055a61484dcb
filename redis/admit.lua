-- Admission: checks every limit of one tenant and reserves each request's
-- worst case (prompt bound + max_tokens, at the model's dearest price) in
-- one atomic step, so that no number of concurrent requests or gateway
-- nodes can pass a limit.  One call admits, in order, all the requests of
-- one tenant that one gateway worker received in one turn of its event
-- loop.
--
-- The per-minute limits use one-second buckets: "r:<second>" counts
-- requests and "t:<second>" tokens.  A request is checked against the 61
-- buckets that overlap the last 60 seconds, a little more than the window
-- itself, so the limit is never passed (a request may wait up to a second
-- longer than a perfect sliding window would make it).
--
-- KEYS[1] llm:{t}:win          HASH r:<sec>, t:<sec>
-- KEYS[2] llm:{t}:spend:d:<yyyymmdd>  HASH reserved, settled (micro-dollars)
-- KEYS[3] llm:{t}:spend:m:<yyyymm>    HASH reserved, settled
-- KEYS[4] llm:{t}:inflight     HASH id ->
--                              "tokens:cost:admitted_ms:deadline_ms:day",
--                              the reservation settle.lua releases, or
--                              sweep.lua once the deadline has passed
-- ARGV: rpm, tpm, budget_day, budget_month (0 = no limit), day_ttl,
--       month_ttl, n, then n times: id, tokens, cost, life_ms (the
--       longest the request can take)
--
-- Numbers are written with '%.0f': Lua's own tostring() would write
-- 1e+14, which neither HINCRBY nor settle.lua can read.
--
-- Returns one answer per request: {0, now, rpm_left, rpm_reset_ms,
-- tpm_left, tpm_reset_ms, day_spent, month_spent} when admitted (spent:
-- micro-dollars settled and reserved, this request's reservation
-- included), {1, what, retry_after_ms} on a
-- rate limit (what: rpm|tpm|tpm_request) and {2, what, 0} on a budget
-- (what: day|month); {3, 'invalid', 0} for a reservation that is not a
-- whole number from 0 to 1e13 (the gateway's own bound, so that the sum
-- of a batch of 128 is still exact in a double).

local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local bday = tonumber(ARGV[3])
local bmonth = tonumber(ARGV[4])
local n = tonumber(ARGV[7])
local day = string.match(KEYS[2], ':(%d+)$') or ''

-- a whole number from 0 to 1e13, or nil
local function int(v)
    v = tonumber(v)
    if v and v == math.floor(v) and v >= 0 and v <= 1e13 then
        return v
    end
    return nil
end

local function fmt(v)
    return string.format('%.0f', v)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sec = math.floor(now / 1000)
local oldest = sec - 60

-- the windows as they stand, read once; buckets that left are dropped

local rb, tb, gone = {}, {}, {}
local rcount, used = 0, 0

if rpm > 0 or tpm > 0 then
    local all = redis.call('HGETALL', KEYS[1])
    for i = 1, #all, 2 do
        local kind, s = string.match(all[i], '^(%a):(%d+)$')
        s = tonumber(s)
        local v = tonumber(all[i + 1]) or 0
        if not s or s < oldest then
            gone[#gone + 1] = all[i]
        elseif kind == 'r' then
            rb[#rb + 1] = {s, v}
            rcount = rcount + v
        else
            tb[#tb + 1] = {s, v}
            used = used + v
        end
    end
    table.sort(rb, function(a, b) return a[1] < b[1] end)
    table.sort(tb, function(a, b) return a[1] < b[1] end)
end

-- when `excess` of the oldest bucketed amounts will have left the window
local function wait(buckets, excess)
    for _, b in ipairs(buckets) do
        excess = excess - b[2]
        if excess <= 0 then
            return (b[1] + 61) * 1000 - now
        end
    end
    return 61000
end

local function reset(buckets)
    if #buckets > 0 then
        return (buckets[1][1] + 61) * 1000 - now
    end
    return 61000
end

-- read with or without a budget: the status page shows every spend
local function spent(key)
    local v = redis.call('HMGET', key, 'reserved', 'settled')
    return (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
end

local dspent = spent(KEYS[2])
local mspent = spent(KEYS[3])

-- each request in order, against the state the earlier ones left

local out, held = {}, {}
local radd, tadd, csum = 0, 0, 0

for i = 0, n - 1 do
    local id = ARGV[8 + i * 4]
    local tokens = int(ARGV[9 + i * 4])
    local cost = int(ARGV[10 + i * 4])
    local life = int(ARGV[11 + i * 4]) or 0
    local res

    if not tokens or not cost then
        res = {3, 'invalid', 0}

    elseif rpm > 0 and rcount + radd >= rpm then
        res = {1, 'rpm', wait(rb, rcount + radd - rpm + 1)}

    elseif tpm > 0 and tokens > tpm then
        res = {1, 'tpm_request', 0}

    elseif tpm > 0 and used + tadd + tokens > tpm then
        res = {1, 'tpm', wait(tb, used + tadd + tokens - tpm)}

    elseif bday > 0 and dspent + cost > bday then
        res = {2, 'day', 0}

    elseif bmonth > 0 and mspent + cost > bmonth then
        res = {2, 'month', 0}

    else
        radd = radd + 1
        tadd = tadd + tokens
        dspent = dspent + cost
        mspent = mspent + cost
        csum = csum + cost
        held[#held + 1] = id
        held[#held + 1] = fmt(tokens) .. ':' .. fmt(cost) .. ':' .. fmt(now)
                          .. ':' .. fmt(now + life) .. ':' .. day
        res = {0, now,
               rpm > 0 and rpm - rcount - radd or -1,
               #rb > 0 and reset(rb) or (sec + 61) * 1000 - now,
               tpm > 0 and tpm - used - tadd or -1,
               #tb > 0 and reset(tb) or (sec + 61) * 1000 - now,
               dspent, mspent}
    end

    out[i + 1] = res
end

-- what the admitted requests reserved, written once; the in-flight
-- records last, so that a record implies its reservation

if #gone > 0 then
    redis.call('HDEL', KEYS[1], unpack(gone))
end

if #held > 0 then
    if rpm > 0 or tpm > 0 then
        redis.call('HINCRBY', KEYS[1], 'r:' .. fmt(sec), fmt(radd))
        redis.call('HINCRBY', KEYS[1], 't:' .. fmt(sec), fmt(tadd))
        redis.call('PEXPIRE', KEYS[1], 62000)
    end
    redis.call('HINCRBY', KEYS[2], 'reserved', fmt(csum))
    redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
    redis.call('HINCRBY', KEYS[3], 'reserved', fmt(csum))
    redis.call('EXPIRE', KEYS[3], tonumber(ARGV[6]))
    redis.call('HSET', KEYS[4], unpack(held))
    redis.call('EXPIRE', KEYS[4], 172800)
end

return out
