-- Settlement: replaces a request's reservation with what it really used,
-- whatever way it ended, and adds the usage record.
--
-- KEYS[1] llm:{t}:tpm   KEYS[2] llm:{t}:spend:d:<day>
-- KEYS[3] llm:{t}:spend:m:<month>   KEYS[4] llm:{t}:usage:<day>
-- KEYS[5] llm:{t}:settled:<day>  SET of settled request ids, so that a
--         settlement retried after a lost reply counts once
-- KEYS[6] llm:{t}:tpm:sum  running total of KEYS[1]
-- ARGV: id, reserved_tokens, used_tokens, reserved_cost, cost,
--       admitted_ms, record_prefix ("<model>|<backend>"), prompt,
--       completion, cached (0|1), usage_ttl

local id = ARGV[1]

if redis.call('SADD', KEYS[5], id) == 0 then
    return 0
end
redis.call('EXPIRE', KEYS[5], 172800)

local rtok, utok = tonumber(ARGV[2]), tonumber(ARGV[3])
local rcost, cost = tonumber(ARGV[4]), tonumber(ARGV[5])

if tonumber(ARGV[6]) > 0 and redis.call('ZREM', KEYS[1], id .. ':' .. rtok) == 1
then
    redis.call('ZADD', KEYS[1], ARGV[6], id .. ':' .. utok)
    redis.call('INCRBY', KEYS[6], utok - rtok)
end

for _, k in ipairs({KEYS[2], KEYS[3]}) do
    if rcost ~= 0 then
        redis.call('HINCRBY', k, 'reserved', -rcost)
    end
    redis.call('HINCRBY', k, 'settled', cost)
end

local p = ARGV[7] .. '|'
redis.call('HINCRBY', KEYS[4], p .. 'requests', 1)
redis.call('HINCRBY', KEYS[4], p .. 'prompt_tokens', tonumber(ARGV[8]))
redis.call('HINCRBY', KEYS[4], p .. 'completion_tokens', tonumber(ARGV[9]))
redis.call('HINCRBY', KEYS[4], p .. 'cost_micro_usd', cost)
if ARGV[10] == '1' then
    redis.call('HINCRBY', KEYS[4], p .. 'cached', 1)
end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[11]))

return 1
