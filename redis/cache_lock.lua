-- Cache lookup for a miss: the entry, if it was stored meanwhile, or the
-- single-flight lock.  Atomic, so that between "no entry" and "lock taken"
-- no leader can finish unseen.
--
-- KEYS[1] llm:cache:<scope>:{<sha>}   KEYS[2] the same, ":lock"
-- ARGV[1] the caller's token   ARGV[2] the lock's expiry, ms
--
-- Returns {1, entry}: a hit; {2}: the caller leads; {3}: another request
-- leads, wait; {4}: the last leader failed, go on alone.

local e = redis.call('GET', KEYS[1])
if e then
    return { 1, e }
end

if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return { 2 }
end

if redis.call('GET', KEYS[2]) == '!failed' then
    return { 4 }
end

return { 3 }
