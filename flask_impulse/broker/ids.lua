-- Shared by both scripts (epoch.lua and publish.lua are each run after this file). The epoch
-- is the first id issued by the current Redis process (its run_id, from INFO): every id before
-- it may have lost successors, because a restart loses what the dataset held (no persistence),
-- or its last second (AOF everysec), and a message acknowledged just before a crash may never
-- have reached a subscriber. It is computed like the next id, so it is newer than every id the
-- previous process issued.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

local function next_id(last_key, ms)
  local seq = 0
  local last = redis.call('GET', last_key)
  if last then
    local last_ms, last_seq = parse(last)
    if last_ms >= ms then
      ms = last_ms
      seq = last_seq + 1
    end
  end
  return string.format('%.0f-%d', ms, seq)
end

local function epoch(epoch_key, last_key, ms)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local current = redis.call('GET', epoch_key)
  if current then
    local current_run, id = string.match(current, '^(%x+) (%S+)$')
    if current_run == run then
      return id
    end
  end
  local id = next_id(last_key, ms)
  redis.call('SET', epoch_key, run .. ' ' .. id)
  return id
end
