-- KEYS: last id, epoch, history stream, trimmed mark, history bytes, [idempotency key].
-- ARGV: history TTL in ms (0: no history), history max bytes, bus channel, report list (or
-- ""), channel, body, idempotency TTL in ms, ENTRY_OVERHEAD.
-- One stream holds the history of every channel, bounded in total (bytes, counted here, and
-- age); per-channel counts apply when reading. The trimmed mark is the newest id that left
-- it: a resume from an older id may have lost messages, and says so with a gap event.
-- A repeated idempotency key publishes nothing and returns what its key holds: the first id,
-- then ":sent" once that push has counted its deliveries.
local ms = now_ms()
epoch(KEYS[2], KEYS[1], ms)
local idem = KEYS[6]
if idem then
  local first = redis.call('GET', idem)
  if first then
    return {first, 0, 1}
  end
end
local id = next_id(KEYS[1], ms)
redis.call('SET', KEYS[1], id)

local ttl, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2])
if ttl > 0 and max_bytes > 0 then
  redis.call('XADD', KEYS[3], id, 'c', ARGV[5], 'm', ARGV[6])
  local overhead = tonumber(ARGV[8])
  local bytes = redis.call('INCRBY', KEYS[5], #ARGV[5] + #ARGV[6] + overhead)
  local min_ms = ms - ttl
  local trimmed = false
  local done = false
  local count = 1  -- most pushes only look at the oldest entry; trims read in batches
  repeat
    local oldest = redis.call('XRANGE', KEYS[3], trimmed and ('(' .. trimmed) or '-', '+', 'COUNT', count)
    done = #oldest < count
    count = 32
    for _, entry in ipairs(oldest) do
      if bytes <= max_bytes and parse(entry[1]) >= min_ms then
        done = true
        break
      end
      bytes = bytes - (#entry[2][2] + #entry[2][4] + overhead)
      trimmed = entry[1]
    end
  until done
  if trimmed then
    local trimmed_ms, trimmed_seq = parse(trimmed)
    redis.call('XTRIM', KEYS[3], 'MINID', string.format('%.0f-%d', trimmed_ms, trimmed_seq + 1))
    if redis.call('XLEN', KEYS[3]) == 0 then
      bytes = 0
    end
    redis.call('SET', KEYS[5], bytes)
    redis.call('SET', KEYS[4], trimmed)
  end
end
local receivers = redis.call('PUBLISH', ARGV[3], id .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. ARGV[6])
if idem then
  -- Without a report to wait for, the count is final now: the processes the message reached.
  redis.call('SET', idem, ARGV[4] == '' and (id .. ':' .. receivers) or id, 'PX', ARGV[7])
end
return {id, receivers, 0}
