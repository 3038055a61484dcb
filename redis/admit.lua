-- Admission: checks every limit of one tenant and reserves the request's
-- worst case (prompt estimate + max_tokens, at the model's price) in one
-- atomic step, so that no number of concurrent requests or gateway nodes
-- can pass a limit.
--
-- KEYS[1] llm:{t}:rpm          ZSET request id -> admission time (ms)
-- KEYS[2] llm:{t}:tpm          ZSET "id:tokens" -> admission time (ms)
-- KEYS[3] llm:{t}:spend:d:<yyyymmdd>  HASH reserved, settled (micro-dollars)
-- KEYS[4] llm:{t}:spend:m:<yyyymm>    HASH reserved, settled
-- KEYS[5] llm:{t}:tpm:sum      tokens in KEYS[2], kept with it
-- KEYS[6] llm:{t}:inflight     HASH id -> "tokens:cost:admitted_ms", the
--                              reservation settle.lua releases
-- ARGV: id, rpm, tpm, budget_day, budget_month (0 = no limit),
--       tokens, cost, day_ttl, month_ttl
--
-- Returns {0, now, rpm_left, rpm_reset_ms, tpm_left, tpm_reset_ms} when
-- admitted, {1, what, retry_after_ms} on a rate limit (what: rpm|tpm) and
-- {2, what, retry_after_ms} on a budget (what: day|month).

local id = ARGV[1]
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local bday = tonumber(ARGV[4])
local bmonth = tonumber(ARGV[5])
local tokens = tonumber(ARGV[6])
local cost = tonumber(ARGV[7])

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = now - 60000

local rpm_left, rpm_reset = -1, 0

if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', from)
    local n = redis.call('ZCARD', KEYS[1])
    if n >= rpm then
        local oldest = redis.call('ZRANGE', KEYS[1], n - rpm, n - rpm,
                                  'WITHSCORES')
        return {1, 'rpm', tonumber(oldest[2]) + 60000 - now}
    end
    rpm_left = rpm - n - 1
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    rpm_reset = first[2] and (tonumber(first[2]) + 60000 - now) or 60000
end

local tpm_left, tpm_reset = -1, 0

if tpm > 0 then
    if tokens > tpm then
        return {1, 'tpm_request', 0}
    end
    -- a running total (KEYS[5]) spares summing the window on every call:
    -- only what leaves the window is subtracted
    local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', from)
    local used = tonumber(redis.call('GET', KEYS[5]) or '0')
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
    if used + tokens > tpm then
        -- wait until enough of the oldest reservations leave the window
        local need = used + tokens - tpm
        local all = redis.call('ZRANGE', KEYS[2], 0, 999, 'WITHSCORES')
        for i = 1, #all, 2 do
            need = need - tonumber(string.match(all[i], ':(%d+)$'))
            if need <= 0 then
                return {1, 'tpm', tonumber(all[i + 1]) + 60000 - now}
            end
        end
        return {1, 'tpm', 60000}
    end
    tpm_left = tpm - used - tokens
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    tpm_reset = first[2] and (tonumber(first[2]) + 60000 - now) or 60000
end

local function over(key, budget)
    if budget <= 0 then
        return false
    end
    local v = redis.call('HMGET', key, 'reserved', 'settled')
    return (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0) + cost > budget
end

if over(KEYS[3], bday) then
    return {2, 'day', 0}
end

if over(KEYS[4], bmonth) then
    return {2, 'month', 0}
end

if rpm > 0 then
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('PEXPIRE', KEYS[1], 61000)
end

if tpm > 0 then
    redis.call('ZADD', KEYS[2], now, id .. ':' .. tokens)
    redis.call('PEXPIRE', KEYS[2], 61000)
    redis.call('INCRBY', KEYS[5], tokens)
    redis.call('PEXPIRE', KEYS[5], 61000)
end

redis.call('HSET', KEYS[6], id, tokens .. ':' .. cost .. ':' .. now)
redis.call('EXPIRE', KEYS[6], 172800)
redis.call('HINCRBY', KEYS[3], 'reserved', cost)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
redis.call('HINCRBY', KEYS[4], 'reserved', cost)
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[9]))

return {0, now, rpm_left, rpm_reset, tpm_left, tpm_reset}
