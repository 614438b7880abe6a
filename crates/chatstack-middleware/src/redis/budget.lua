-- budget: one spending cap shared by every process, in exact integer nano-dollars.
-- One script for every operation, so that each is one atomic round trip:
--
-- KEYS[1]  state hash: spent, reserved, in_flight, admitted, refused, expired
-- KEYS[2]  live reservations, a zset: id -> expiry (ms of server TIME)
-- KEYS[3]  their amounts, a hash: id -> n$
-- KEYS[4]  this process's replay guard: the last settlement seq applied
-- ARGV[1]  the operation, then its arguments:
--   reserve  id amount cap ttl_ms  -> {1, figures...} | {0, figures...} refused
--   settle   id actual seq         -> {1, spent} | {2, spent} a replay, ignored
--            (id '' : a cost settled while the process could not reach Redis)
--   release  id                    -> {1} | {0} unknown (settled, expired or never reserved)
--   renew    ttl_ms id...          -> {renewed}
--   snapshot                       -> {figures...}
-- where figures are spent, reserved, in_flight, admitted, refused, expired (strings)
--
-- Every call first drops up to 64 reservations whose process stopped renewing them (it died):
-- their amounts stop holding the cap. A settlement that comes after its reservation expired
-- still counts its cost: the money was spent.
--
-- Money never goes through Lua arithmetic (doubles, exact only to 2^53 n$ = $9.007M): sums
-- are HINCRBY (int64, to $9.2B), the cap test compares two-limb numbers (hi = whole 1e9 n$,
-- lo < 1e9), and figures are returned as the strings Redis holds.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]
local function limbs(s)
  s = s or '0'
  if string.sub(s, 1, 1) == '-' then return {0, 0} end
  if #s <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, -10)), tonumber(string.sub(s, -9))}
end
local function add(a, b)
  local lo = a[2] + b[2]
  if lo >= 1e9 then return {a[1] + b[1] + 1, lo - 1e9} end
  return {a[1] + b[1], lo}
end
local function le(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] <= b[2]) end
local function drop(id)
  local amount = redis.call('HGET', KEYS[3], id)
  if not amount then return false end
  redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. amount)
  redis.call('HINCRBY', KEYS[1], 'in_flight', -1)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[2], id)
  return true
end
local function figures(...)
  local f = redis.call('HMGET', KEYS[1], 'spent', 'reserved', 'in_flight', 'admitted', 'refused', 'expired')
  local out = {...}
  for i = 1, 6 do out[#out + 1] = f[i] or '0' end
  return out
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 64)) do
  if drop(id) then redis.call('HINCRBY', KEYS[1], 'expired', 1) end
end
if op == 'reserve' then
  local id, amount, cap, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
  local f = redis.call('HMGET', KEYS[1], 'spent', 'reserved')
  local spent, reserved = f[1] or '0', f[2] or '0'
  if redis.call('HEXISTS', KEYS[3], id) == 1 then return figures(1) end
  if not le(add(add(limbs(spent), limbs(reserved)), limbs(amount)), limbs(cap)) then
    redis.call('HINCRBY', KEYS[1], 'refused', 1)
    return figures(0)
  end
  redis.call('HINCRBY', KEYS[1], 'reserved', amount)
  redis.call('HINCRBY', KEYS[1], 'in_flight', 1)
  redis.call('HINCRBY', KEYS[1], 'admitted', 1)
  redis.call('HSET', KEYS[3], id, amount)
  redis.call('ZADD', KEYS[2], now + ttl, id)
  return figures(1)
elseif op == 'settle' then
  local id, actual, seq = ARGV[2], ARGV[3], tonumber(ARGV[4])
  if tonumber(redis.call('GET', KEYS[4]) or '0') >= seq then
    return {2, redis.call('HGET', KEYS[1], 'spent') or '0'}
  end
  redis.call('SET', KEYS[4], ARGV[4], 'PX', 604800000)
  if id ~= '' then drop(id) end
  redis.call('HINCRBY', KEYS[1], 'spent', actual)
  return {1, redis.call('HGET', KEYS[1], 'spent')}
elseif op == 'release' then
  if drop(ARGV[2]) then return {1} end
  return {0}
elseif op == 'renew' then
  local renewed = 0
  for i = 3, #ARGV do
    renewed = renewed + redis.call('ZADD', KEYS[2], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[i])
  end
  return {renewed}
elseif op == 'snapshot' then
  return figures()
end
return redis.error_reply('budget.lua: unknown operation ' .. tostring(op))
