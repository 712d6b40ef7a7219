-- Presence: drop the fields of processes whose alive key expired, and announce the leave of
-- every member who had streams on those processes only.
-- KEYS[1] the channel's hash. ARGV: the alive-key prefix, the events pub/sub channel, the channel.
local hash, alive_prefix, events, channel = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local fields = redis.call("HGETALL", hash)
local alive, dead_members, live_members = {}, {}, {}
local dropped = 0
for i = 1, #fields, 2 do
  local p, m = string.match(fields[i], "^([^\031]*)\031(.*)$")
  if alive[p] == nil then alive[p] = redis.call("EXISTS", alive_prefix .. p) == 1 end
  if alive[p] then
    if m ~= "" then live_members[m] = true end
  else
    redis.call("HDEL", hash, fields[i])
    dropped = dropped + 1
    if m ~= "" then dead_members[m] = true end
  end
end
for m, _ in pairs(dead_members) do
  if not live_members[m] then
    redis.call("PUBLISH", events, cjson.encode({channel = channel, member = m, action = "leave"}))
  end
end
return dropped
