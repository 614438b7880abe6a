-- ledger_read: an account as every process recorded it: the total, then each model's and
-- each tag's row, names sorted. (The rows' keys are named from the total's, so they share
-- its hash tag and cluster slot.)
--
-- KEYS     total hash, model set, tag set
-- returns  {total fields..., n_models, (model, fields...)..., n_tags, (tag, fields...)...}
--          fields: requests without_usage long_context input cached_input cache_write
--          output reasoning cost (strings)
local fields = {'requests', 'without_usage', 'long_context', 'input', 'cached_input',
  'cache_write', 'output', 'reasoning', 'cost'}
local out = {}
local function append(key)
  local values = redis.call('HMGET', key, unpack(fields))
  for i = 1, #fields do out[#out + 1] = values[i] or '0' end
end
append(KEYS[1])
for _, kind in ipairs({{'model', KEYS[2]}, {'tag', KEYS[3]}}) do
  local names = redis.call('SMEMBERS', kind[2])
  table.sort(names)
  out[#out + 1] = #names
  for _, name in ipairs(names) do
    out[#out + 1] = name
    append(KEYS[1] .. ':' .. kind[1] .. ':' .. name)
  end
end
return out
