-- Presence: one process's counts on one channel, and the cluster-wide join or leave they make.
-- KEYS[1] the channel's hash. ARGV: process, member ("" for none), the member's local count,
-- the process's local streams on the channel, ttl in ms, the alive-key prefix, the events
-- pub/sub channel, the channel's name, and "join", "leave" or "" (the local change).
local hash, process, member = KEYS[1], ARGV[1], ARGV[2]
local count, connections, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local alive_prefix, events, channel, change = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local sep = "\031"
redis.call("SET", alive_prefix .. process, "1", "PX", ttl)
if member ~= "" then
  if count > 0 then redis.call("HSET", hash, process .. sep .. member, count)
  else redis.call("HDEL", hash, process .. sep .. member) end
end
if connections > 0 then
  redis.call("HSET", hash, process .. sep, connections)
  redis.call("PEXPIRE", hash, ttl)
else
  redis.call("HDEL", hash, process .. sep)
end
if change == "" then return 0 end
-- The member's streams on live processes other than this one.
local others = 0
local fields = redis.call("HGETALL", hash)
for i = 1, #fields, 2 do
  local p, m = string.match(fields[i], "^([^\031]*)\031(.*)$")
  if m == member and p ~= process and redis.call("EXISTS", alive_prefix .. p) == 1 then
    others = others + tonumber(fields[i + 1])
  end
end
if others == 0 then
  redis.call("PUBLISH", events, cjson.encode({channel = channel, member = member, action = change}))
  return 1
end
return 0
