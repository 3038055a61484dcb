-- Settlement: replaces a request's reservation with what it really used,
-- whatever way it ended, and adds the usage record.
--
-- KEYS[1] llm:{t}:tpm            KEYS[2] llm:{t}:spend:d:<day>
-- KEYS[3] llm:{t}:spend:m:<month>  KEYS[4] llm:{t}:usage:<day>
-- KEYS[5] llm:{t}:settled:<day>  ids of unmetered requests already recorded
-- KEYS[6] llm:{t}:tpm:sum        KEYS[7] llm:{t}:inflight
-- ARGV: id, used_tokens, cost, record_prefix ("<model>|<backend>"),
--       prompt, completion, cached (0|1), usage_ttl,
--       mode ("m": admitted by admit.lua, "u": served unmetered)
--
-- The reservation is read from the in-flight record admit.lua wrote, so a
-- request whose admission was refused, or never ran, releases nothing, and
-- a settlement sent twice (a retry after a lost reply) counts once.

local id = ARGV[1]
local rtok, rcost, admitted = 0, 0, 0

if ARGV[9] == 'u' then
    if redis.call('SADD', KEYS[5], id) == 0 then
        return 0
    end
    redis.call('EXPIRE', KEYS[5], 172800)
else
    local v = redis.call('HGET', KEYS[7], id)
    if not v then
        return 0
    end
    redis.call('HDEL', KEYS[7], id)
    local a, b, c = string.match(v, '^(%d+):(%d+):(%d+)$')
    rtok, rcost, admitted = tonumber(a), tonumber(b), tonumber(c)
end

local utok, cost = tonumber(ARGV[2]), tonumber(ARGV[3])

if rtok > 0 and redis.call('ZREM', KEYS[1], id .. ':' .. rtok) == 1 then
    redis.call('ZADD', KEYS[1], admitted, id .. ':' .. utok)
    redis.call('INCRBY', KEYS[6], utok - rtok)
end

for _, k in ipairs({KEYS[2], KEYS[3]}) do
    if rcost ~= 0 then
        redis.call('HINCRBY', k, 'reserved', -rcost)
    end
    redis.call('HINCRBY', k, 'settled', cost)
end

local p = ARGV[4] .. '|'
redis.call('HINCRBY', KEYS[4], p .. 'requests', 1)
redis.call('HINCRBY', KEYS[4], p .. 'prompt_tokens', tonumber(ARGV[5]))
redis.call('HINCRBY', KEYS[4], p .. 'completion_tokens', tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[4], p .. 'cost_micro_usd', cost)
if ARGV[7] == '1' then
    redis.call('HINCRBY', KEYS[4], p .. 'cached', 1)
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[8]))

return 1
