-- ledger: adds one response's cost to an account that every process records into, in
-- exact integers (HINCRBY), under the total, its model and its tag. Sent from the process's
-- ordered queue, guarded against replays: a record sent twice after a lost reply counts once.
--
-- KEYS     total hash, this process's replay guard, model hash, tag hash, model set, tag set
-- ARGV     seq model tag('' none) requests without_usage long_context input cached_input
--          cache_write output reasoning cost_nanos
-- returns  1 | 2 for a replay
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[1]) then return 2 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', 604800000)
local fields = {'requests', 'without_usage', 'long_context', 'input', 'cached_input',
  'cache_write', 'output', 'reasoning', 'cost'}
local tagged = ARGV[3] ~= ''
for i, field in ipairs(fields) do
  local value = ARGV[3 + i]
  if value ~= '0' then
    redis.call('HINCRBY', KEYS[1], field, value)
    redis.call('HINCRBY', KEYS[3], field, value)
    if tagged then redis.call('HINCRBY', KEYS[4], field, value) end
  end
end
redis.call('SADD', KEYS[5], ARGV[2])
if tagged then redis.call('SADD', KEYS[6], ARGV[3]) end
return 1
