-- KEYS: last id, epoch. Returns the epoch, the last id issued (or false), Redis's clock in ms.
local ms = now_ms()
return {epoch(KEYS[2], KEYS[1], ms), redis.call('GET', KEYS[1]), ms}
