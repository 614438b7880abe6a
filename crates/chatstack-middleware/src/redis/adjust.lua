-- adjust: what the in-process limiter does when a response completes or the provider
-- pushes back (rate_limit/state.rs, `reconcile` and `pause`), on the shared state of one key.
-- Sent from the process's ordered queue (the completion hooks cannot wait for a reply), and
-- guarded against replays: an adjustment sent twice after a lost reply counts once.
--
-- KEYS     as acquire.lua (state hash, slack log), then this process's replay guard for the
--          layer (the last op_seq applied; a key with a 7-day TTL)
-- ARGV     op_seq seq debt_ns credit_ns pause_ns idle_ms
--          seq: the admission's slack-log sequence (credit only); debt = excess cells * T
--          (capped by the caller at the quota); credit = unused cells * T; pause_ns: hold
--          admissions until now + pause_ns (only ever lengthened)
-- returns  {1, refunded_ns} | {2, 0} for a replay
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[1]) then return {2, 0} end
redis.call('SET', KEYS[3], ARGV[1], 'PX', 604800000)
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local seq, debt, credit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pause_ns, idle_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local function n(x) return string.format('%.0f', x) end
local s = redis.call('HMGET', KEYS[1], 'ep', 'ttat', 'pause', 'forgot')
local ep = tonumber(s[1]) or now_us
local now = (now_us - ep) * 1000
local ttat, pause, forgot = tonumber(s[2]), tonumber(s[3]) or 0, tonumber(s[4]) or 0
local function slack_of(m) return tonumber(string.match(m, ':(%d+)$')) end
local function seq_of(m) return tonumber(string.match(m, '^(%d+):')) end
local refund = 0
if ttat and credit > 0 and seq > 0 and seq >= forgot then
  -- SlackLog::least_since(seq): the slack of the first charge after seq (none: no bound).
  local after = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. n(seq), '+inf')
  refund = credit
  if after[1] then refund = math.min(credit, slack_of(after[1])) end
  if refund > 0 then
    ttat = ttat - refund
    -- SlackLog::lower_since: the charges since seq would have found that much less slack;
    -- older entries no smaller than the new first one are dropped.
    for _, m in ipairs(after) do
      local q = seq_of(m)
      redis.call('ZREM', KEYS[2], m)
      redis.call('ZADD', KEYS[2], q, n(q) .. ':' .. n(math.max(0, slack_of(m) - refund)))
    end
    if after[1] then
      local lowest = math.max(0, slack_of(after[1]) - refund)
      local before = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', n(seq))
      for i = #before, 1, -1 do
        if slack_of(before[i]) < lowest then break end
        redis.call('ZREM', KEYS[2], before[i])
      end
    end
  end
end
if debt > 0 then
  -- Bucket::owe, logged like a charge.
  local slack = math.max(0, (ttat or now) - now)
  ttat = math.max(ttat or now, now) + debt
  local q = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  while true do
    local last = redis.call('ZRANGE', KEYS[2], -1, -1)[1]
    if not last or slack_of(last) < slack then break end
    redis.call('ZREMRANGEBYRANK', KEYS[2], -1, -1)
  end
  redis.call('ZADD', KEYS[2], q, n(q) .. ':' .. n(slack))
end
if pause_ns > 0 and now + pause_ns > pause then pause = now + pause_ns end
redis.call('HSET', KEYS[1], 'ep', n(ep), 'pause', n(pause))
if ttat then redis.call('HSET', KEYS[1], 'ttat', n(ttat)) end
local ttl = math.ceil((math.max(ttat or 0, pause) - now) / 1e6) + idle_ms
redis.call('PEXPIRE', KEYS[1], ttl)
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1, refund}
