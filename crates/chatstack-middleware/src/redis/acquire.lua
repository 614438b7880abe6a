-- acquire: one request cell and `tokens` token cells for one key, all or nothing: the
-- in-process limiter's GCRA test and update (rate_limit/state.rs, `admit_now`), on state
-- that every process shares. Times come from the server's clock (TIME), in integer
-- nanoseconds relative to the key's own epoch, so that Lua's doubles stay exact (< 2^53).
--
-- KEYS[1]  state hash: ep (epoch, µs of server TIME), rtat, ttat (theoretical arrival time of
--          the request and token buckets), pause (admissions held back until then), all in
--          ns since ep; seq, forgot (the slack log's)
-- KEYS[2]  slack log (Reconcile::Full), a zset: member "seq:slack_ns", score seq
-- KEYS[3]  boot sentinel: server TIME (µs) when this server first held limiter state
-- ARGV     req_cost_ns req_tol_ns tok_cost_ns tok_tol_ns log(0|1) window_ms idle_ms
--          cost = cells * T, tol = burst * T (T: the bucket's emission interval); cost 0: off
-- returns  {1, 0, seq, now_us, r_ahead_ns, t_ahead_ns}     admitted
--          {0, wait_ns, 0, now_us, r_ahead_ns, t_ahead_ns} not yet (nothing charged)
--          where *_ahead is how far the bucket's tat is past now (0: full)
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rc, rtol = tonumber(ARGV[1]), tonumber(ARGV[2])
local tc, ttol = tonumber(ARGV[3]), tonumber(ARGV[4])
local window_us, idle_ms = tonumber(ARGV[6]) * 1000, tonumber(ARGV[7])
local function n(x) return string.format('%.0f', x) end
local s = redis.call('HMGET', KEYS[1], 'ep', 'rtat', 'ttat', 'pause')
local ep = tonumber(s[1]) or now_us
local rtat, ttat, pause = tonumber(s[2]), tonumber(s[3]), tonumber(s[4]) or 0
local now = (now_us - ep) * 1000
if now > 2251799813685248 then
  -- 2^51 ns (26 days) of continuous use: move the epoch to now, exactly.
  local shift = now
  ep, now, pause = now_us, 0, pause - shift
  if rtat then rtat = rtat - shift end
  if ttat then ttat = ttat - shift end
end
local function save()
  redis.call('HSET', KEYS[1], 'ep', n(ep), 'pause', n(pause))
  if rtat then redis.call('HSET', KEYS[1], 'rtat', n(rtat)) end
  if ttat then redis.call('HSET', KEYS[1], 'ttat', n(ttat)) end
end
-- A bucket without state: full ("no past", as in process) if this server has held limiter
-- state for a whole window, else empty. A server that lost its data (a restart without
-- persistence, a failover) must not hand out a fresh burst on top of the minute the lost
-- state had already admitted; one window later nothing from before the loss can count.
local fresh_r, fresh_t = rc > 0 and not rtat, tc > 0 and not ttat
if fresh_r or fresh_t then
  local boot = tonumber(redis.call('GET', KEYS[3]) or '')
  if not boot then
    boot = now_us
    redis.call('SET', KEYS[3], n(boot))
  end
  local empty = now_us - boot < window_us
  local full = -4503599627370496
  if fresh_r then rtat = empty and (now + rtol) or full end
  if fresh_t then ttat = empty and (now + ttol) or full end
  if empty then
    -- Remembered even if this request must wait: else every retry would start empty again.
    save()
    redis.call('PEXPIRE', KEYS[1], idle_ms + math.ceil(math.max(rtol, ttol) / 1e6))
  end
end
local function ahead(tat)
  if not tat then return 0 end
  return math.max(0, tat - now)
end
local wait = math.max(0, pause - now)
if rc > 0 then wait = math.max(wait, rtat + rc - rtol - now) end
if tc > 0 then wait = math.max(wait, ttat + tc - ttol - now) end
if wait > 0 then return {0, wait, 0, now_us, ahead(rtat), ahead(ttat)} end
local seq = 0
if rc > 0 then rtat = math.max(rtat, now) + rc end
if tc > 0 then
  local slack = math.max(0, ttat - now)
  ttat = math.max(ttat, now) + tc
  if ARGV[5] == '1' then
    -- SlackLog::record: a stack of suffix minima, oldest first, at most 1024 entries.
    seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    while true do
      local last = redis.call('ZRANGE', KEYS[2], -1, -1)[1]
      if not last or tonumber(string.match(last, ':(%d+)$')) < slack then break end
      redis.call('ZREMRANGEBYRANK', KEYS[2], -1, -1)
    end
    redis.call('ZADD', KEYS[2], seq, n(seq) .. ':' .. n(slack))
    if redis.call('ZCARD', KEYS[2]) > 1024 then
      local dropped = redis.call('ZPOPMIN', KEYS[2])
      redis.call('HSET', KEYS[1], 'forgot', dropped[2])
    end
  end
end
save()
-- Kept until the buckets are full again and then `idle_ms` more (at least a window: a key
-- that comes back after that is rightly full).
local ttl = math.ceil((math.max(rtat or 0, ttat or 0, pause) - now) / 1e6) + idle_ms
redis.call('PEXPIRE', KEYS[1], ttl)
if seq > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1, 0, seq, now_us, ahead(rtat), ahead(ttat)}
