-- Admission: checks every limit of one tenant and reserves each request's
-- worst case (prompt bound + max_tokens, at the model's dearest price) in
-- one atomic step, so that no number of concurrent requests or gateway
-- nodes can pass a limit.  One call admits, in order, all the requests of
-- one tenant that one gateway worker received in one turn of its event
-- loop.
--
-- KEYS[1] llm:{t}:rpm          ZSET request id -> admission time (ms)
-- KEYS[2] llm:{t}:tpm          ZSET "id:tokens" -> admission time (ms)
-- KEYS[3] llm:{t}:spend:d:<yyyymmdd>  HASH reserved, settled (micro-dollars)
-- KEYS[4] llm:{t}:spend:m:<yyyymm>    HASH reserved, settled
-- KEYS[5] llm:{t}:tpm:sum      tokens in KEYS[2], kept with it
-- KEYS[6] llm:{t}:inflight     HASH id -> "tokens:cost:admitted_ms", the
--                              reservation settle.lua releases
-- ARGV: rpm, tpm, budget_day, budget_month (0 = no limit), day_ttl,
--       month_ttl, n, then n times: id, tokens, cost
--
-- Returns one answer per request: {0, now, rpm_left, rpm_reset_ms,
-- tpm_left, tpm_reset_ms} when admitted, {1, what, retry_after_ms} on a
-- rate limit (what: rpm|tpm|tpm_request) and {2, what, 0} on a budget
-- (what: day|month).

local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local bday = tonumber(ARGV[3])
local bmonth = tonumber(ARGV[4])
local n = tonumber(ARGV[7])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = now - 60000

-- the windows and budgets as they stand, read once

local rcount, rstored, rfirst = 0, 0, nil
if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', from)
    rcount = redis.call('ZCARD', KEYS[1])
    rstored = rcount
    local f = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    rfirst = f[2] and tonumber(f[2])
end

local used, tfirst = 0, nil
if tpm > 0 then
    -- a running total spares summing the window: only what leaves it
    -- is subtracted
    local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', from)
    used = tonumber(redis.call('GET', KEYS[5]) or '0')
    if #gone > 0 then
        for i = 1, #gone do
            used = used - tonumber(string.match(gone[i], ':(%d+)$'))
        end
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', from)
        if redis.call('ZCARD', KEYS[2]) == 0 then
            used = 0
        end
        redis.call('SET', KEYS[5], used, 'PX', 61000)
    end
    local f = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    tfirst = f[2] and tonumber(f[2])
end

local function spent(key, budget)
    if budget <= 0 then
        return 0
    end
    local v = redis.call('HMGET', key, 'reserved', 'settled')
    return (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
end

local dspent = spent(KEYS[3], bday)
local mspent = spent(KEYS[4], bmonth)

-- each request in order, against the state the earlier ones left

local out, radd, tadd, held = {}, {}, {}, {}
local tsum, csum = 0, 0

for i = 0, n - 1 do
    local id = ARGV[8 + i * 3]
    local tokens = tonumber(ARGV[9 + i * 3])
    local cost = tonumber(ARGV[10 + i * 3])
    local res

    if rpm > 0 and rcount >= rpm then
        -- the oldest entry that must leave the window first
        local k = rcount - rpm
        local retry = 60000
        if k < rstored then
            local o = redis.call('ZRANGE', KEYS[1], k, k, 'WITHSCORES')
            retry = tonumber(o[2]) + 60000 - now
        end
        res = {1, 'rpm', retry}

    elseif tpm > 0 and tokens > tpm then
        res = {1, 'tpm_request', 0}

    elseif tpm > 0 and used + tokens > tpm then
        local need = used + tokens - tpm
        local retry = 60000
        local all = redis.call('ZRANGE', KEYS[2], 0, 999, 'WITHSCORES')
        for j = 1, #all, 2 do
            need = need - tonumber(string.match(all[j], ':(%d+)$'))
            if need <= 0 then
                retry = tonumber(all[j + 1]) + 60000 - now
                break
            end
        end
        res = {1, 'tpm', retry}

    elseif bday > 0 and dspent + cost > bday then
        res = {2, 'day', 0}

    elseif bmonth > 0 and mspent + cost > bmonth then
        res = {2, 'month', 0}

    else
        rcount = rcount + 1
        used = used + tokens
        dspent = dspent + cost
        mspent = mspent + cost
        tsum = tsum + tokens
        csum = csum + cost
        radd[#radd + 1] = now
        radd[#radd + 1] = id
        tadd[#tadd + 1] = now
        tadd[#tadd + 1] = id .. ':' .. tokens
        held[#held + 1] = id
        held[#held + 1] = tokens .. ':' .. cost .. ':' .. now
        rfirst = rfirst or now
        tfirst = tfirst or now
        res = {0, now,
               rpm > 0 and rpm - rcount or -1, rfirst + 60000 - now,
               tpm > 0 and tpm - used or -1, tfirst + 60000 - now}
    end

    out[i + 1] = res
end

-- what the admitted requests reserved, written once

if #held > 0 then
    if rpm > 0 then
        redis.call('ZADD', KEYS[1], unpack(radd))
        redis.call('PEXPIRE', KEYS[1], 61000)
    end
    if tpm > 0 then
        redis.call('ZADD', KEYS[2], unpack(tadd))
        redis.call('PEXPIRE', KEYS[2], 61000)
        redis.call('INCRBY', KEYS[5], tsum)
        redis.call('PEXPIRE', KEYS[5], 61000)
    end
    redis.call('HSET', KEYS[6], unpack(held))
    redis.call('EXPIRE', KEYS[6], 172800)
    redis.call('HINCRBY', KEYS[3], 'reserved', csum)
    redis.call('EXPIRE', KEYS[3], tonumber(ARGV[5]))
    redis.call('HINCRBY', KEYS[4], 'reserved', csum)
    redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
end

return out
