-- Sweeper: releases the reservations of requests that can no longer be
-- running (their gateway crashed, or their settlement was lost), one
-- bounded HSCAN step of one tenant's in-flight hash per call.  The
-- gateway worker that holds the sweep lock walks the tenants with SCAN
-- and calls this until the cursor comes back "0".
--
-- KEYS[1] llm:{t}:inflight   the keys it writes are named after it, in
--                            the same slot: llm:{t}:spend:d:<day> and
--                            spend:m:<month> of each record's day, and
--                            llm:{t}:swept:<day>, the ids released, so
--                            that a request that still ends is charged
-- ARGV: cursor, count, life_ms (for records written without a deadline)
--
-- A record is "tokens:cost:admitted_ms[:deadline_ms:day]".  One whose
-- deadline has passed is deleted and its cost taken off `reserved` of
-- its day and month, if those still exist.  One that cannot be read (a
-- cost with an exponent, which an older admit.lua wrote when its HINCRBY
-- failed, so nothing was reserved) can release nothing: it is deleted
-- and counted once its request cannot be running (its admission time
-- plus life_ms if that can be read, else a day after the sweeper first
-- saw it, noted in llm:{t}:malformed), and its id goes to swept:<day>
-- like the others, so that a late settlement still charges.
--
-- Returns {next_cursor, released, malformed}.

local prefix = string.sub(KEYS[1], 1, -9)        -- "llm:{t}:"
local life = tonumber(ARGV[3]) or 0
local marks = prefix .. 'malformed'               -- id: first seen, ms
local legacy = 86400000

local function fmt(v)
    return string.format('%.0f', v)
end

local function int(v)
    v = tonumber(v)
    if v and v == math.floor(v) and v > -9007199254740992
       and v < 9007199254740992
    then
        return v
    end
    return nil
end

-- yyyymmdd of a time in ms, UTC (H. Hinnant's civil_from_days)
local function civil(ms)
    local z = math.floor(ms / 86400000) + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460)
                            + math.floor(doe / 36524)
                            - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4)
                       - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local d = doy - math.floor((153 * mp + 2) / 5) + 1
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400
    if m <= 2 then
        y = y + 1
    end
    return string.format('%04d%02d%02d', y, m, d)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- a key of another type that matched the pattern: nothing to sweep
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then
    return {'0', 0, 0}
end

local r = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local gone, release, swept = {}, {}, {}
local released, malformed = 0, 0

for i = 1, #r[2], 2 do
    local v = r[2][i + 1]
    local a, b, c, d, day =
        string.match(v, '^([^:]+):(-?%d+):(-?%d+):?(%d*):?(%d*)$')
    a, b, c, d = int(a), int(b), int(c), int(d)

    if not (a and b and c) then
        -- kept until its request cannot be running, then released like
        -- the others (it reserved nothing we can read), so that its
        -- settlement still charges
        local id = r[2][i]
        local at = int(string.match(v, '^[^:]*:[^:]*:(-?%d+)'))
        local dead = at and at + life
        if not dead then
            redis.call('HSETNX', marks, id, fmt(now))
            redis.call('PEXPIRE', marks, 2 * legacy)
            dead = (int(redis.call('HGET', marks, id)) or now) + legacy
        end
        if dead < now then
            malformed = malformed + 1
            gone[#gone + 1] = id
            day = string.match(v, ':(%d%d%d%d%d%d%d%d)$')
                  or civil(at or now)
            swept[day] = swept[day] or {}
            table.insert(swept[day], id)
            redis.call('HDEL', marks, id)
        end

    elseif (d or c + life) < now then
        released = released + 1
        gone[#gone + 1] = r[2][i]
        if day == '' then
            day = civil(c)
        end
        swept[day] = swept[day] or {}
        table.insert(swept[day], r[2][i])
        if b ~= 0 then
            release[day] = (release[day] or 0) + b
        end
    end
end

local months = {}

for day, cost in pairs(release) do
    local k = prefix .. 'spend:d:' .. day
    if redis.call('EXISTS', k) == 1 then
        redis.call('HINCRBY', k, 'reserved', fmt(-cost))
    end
    local m = string.sub(day, 1, 6)
    months[m] = (months[m] or 0) + cost
end

for m, cost in pairs(months) do
    local k = prefix .. 'spend:m:' .. m
    if redis.call('EXISTS', k) == 1 then
        redis.call('HINCRBY', k, 'reserved', fmt(-cost))
    end
end

for day, ids in pairs(swept) do
    local k = prefix .. 'swept:' .. day
    redis.call('SADD', k, unpack(ids))
    redis.call('EXPIRE', k, 172800)
end

if #gone > 0 then
    redis.call('HDEL', KEYS[1], unpack(gone))
end

return {r[1], released, malformed}
