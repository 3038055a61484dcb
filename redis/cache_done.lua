-- A single-flight leader is done: it stores the entry, if it has one, and
-- releases its lock.  A leader without an entry leaves a short-lived
-- marker that tells its followers to go on alone.
--
-- KEYS[1] llm:cache:<scope>:{<sha>}   KEYS[2] the same, ":lock"
-- ARGV[1] the leader's token   ARGV[2] the entry, or ""
-- ARGV[3] the entry's time to live, ms   ARGV[4] the marker's, ms

if ARGV[2] ~= '' then
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end

if redis.call('GET', KEYS[2]) == ARGV[1] then
    if ARGV[2] ~= '' then
        redis.call('DEL', KEYS[2])
    else
        redis.call('SET', KEYS[2], '!failed', 'PX', ARGV[4])
    end
end

return 1
