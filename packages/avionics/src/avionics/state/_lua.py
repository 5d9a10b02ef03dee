"""The Lua scripts: one per operation, each one atomic on the Redis server.

Times come from the server (`TIME`), in milliseconds, so workers on machines with skewed clocks
agree on windows, leases and cooldowns. Data layout (every key starts with `[state] key_prefix`):

- sliding window `W` (`ratelimit:NAME:requests`, `ratelimit:NAME:tokens`): ZSET `W` of entry id
  -> admission time, HASH `W:units` of entry id -> units plus field `=` -> total. An entry leaves
  the window (and gives its units back) `window` ms after it was taken, whoever took it: a crashed
  worker's reservations expire with the window instead of leaking.
- concurrency leases (`ratelimit:NAME:leases`): ZSET of call id -> lease expiry. A lease is
  dropped when its call settles, or when it expires (a crashed worker).
- budget `B` (`budget:AGENT:PERIOD:WINDOW`): HASH `B` with `spent` and `reserved` in integer
  picodollars and `h:ID` -> the amount held by open reservation ID; ZSET `B:holds` of ID ->
  hold expiry. An expired hold is given back; its call's cost is still added when it settles.
- breaker (`breaker:NODE`): HASH with `opened` (server ms), `failures`, `probe` (server ms).

Money is added with HINCRBY on decimal strings (exact 64-bit integers); only comparisons convert to
Lua numbers (exact up to 2^53 picodollars, about $9,007, and off by a few picodollars above).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "ADMIT",
    "BREAKER_PUT",
    "BREAKER_READ",
    "BUDGET_RESERVE",
    "BUDGET_SETTLE",
    "BUDGET_STATE",
    "SCRIPTS",
    "SETTLE",
    "WINDOW_ACQUIRE",
    "WINDOW_SETTLE",
    "LuaScript",
]


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's name (for logs and errors), source and SHA1 (for EVALSHA)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_WINDOW = """
local BATCH = 500
-- Drop entries taken at or before `cutoff`, give their units back; return the units in use.
local function window_evict(zk, hk, cutoff)
  while true do
    local old = redis.call('ZRANGEBYSCORE', zk, '-inf', cutoff, 'LIMIT', 0, BATCH)
    if #old == 0 then break end
    local units = redis.call('HMGET', hk, unpack(old))
    local freed = 0
    for i = 1, #old do freed = freed + (tonumber(units[i]) or 0) end
    redis.call('ZREM', zk, unpack(old))
    redis.call('HDEL', hk, unpack(old))
    if freed ~= 0 then redis.call('HINCRBY', hk, '=', -freed) end
    if #old < BATCH then break end
  end
  return tonumber(redis.call('HGET', hk, '=') or '0')
end

-- Milliseconds until `need` units have left the window, oldest entries first (at least 1).
local function window_wait(zk, hk, need, now, window)
  local freed = 0
  local offset = 0
  while offset < 10 * BATCH do
    local batch = redis.call('ZRANGE', zk, offset, offset + BATCH - 1, 'WITHSCORES')
    if #batch == 0 then break end
    local ids = {}
    for i = 1, #batch, 2 do ids[#ids + 1] = batch[i] end
    local units = redis.call('HMGET', hk, unpack(ids))
    for i = 1, #ids do
      freed = freed + (tonumber(units[i]) or 0)
      if freed >= need then
        return math.max(tonumber(batch[2 * i]) + window - now, 1)
      end
    end
    offset = offset + BATCH
  end
  return window
end

local function window_add(zk, hk, id, units, at, ttl)
  redis.call('ZADD', zk, at, id)
  redis.call('HSET', hk, id, units)
  redis.call('HINCRBY', hk, '=', units)
  redis.call('PEXPIRE', zk, ttl)
  redis.call('PEXPIRE', hk, ttl)
end
"""

_BUDGET = """
-- Give back the holds of reservations that expired without settling (crashed workers).
local function budget_evict(bk, now)
  local hz = bk .. ':holds'
  while true do
    local old = redis.call('ZRANGEBYSCORE', hz, '-inf', now, 'LIMIT', 0, 500)
    if #old == 0 then break end
    for i = 1, #old do
      local f = 'h:' .. old[i]
      local held = redis.call('HGET', bk, f)
      if held then
        if held ~= '0' then redis.call('HINCRBY', bk, 'reserved', '-' .. held) end
        redis.call('HDEL', bk, f)
      end
    end
    redis.call('ZREM', hz, unpack(old))
    if #old < 500 then break end
  end
end

local function budget_state(bk)
  local v = redis.call('HMGET', bk, 'spent', 'reserved')
  return v[1] or '0', v[2] or '0'
end

local function budget_fits(bk, amount, limit)
  local spent, reserved = budget_state(bk)
  if tonumber(spent) + tonumber(reserved) + tonumber(amount) > tonumber(limit) then
    return false, spent, reserved
  end
  return true, spent, reserved
end

local function budget_keep(bk, ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', bk, ttl)
    redis.call('PEXPIRE', bk .. ':holds', ttl)
  end
end

local function budget_hold(bk, id, amount, expires, ttl)
  if amount ~= '0' then
    redis.call('HSET', bk, 'h:' .. id, amount)
    redis.call('HINCRBY', bk, 'reserved', amount)
    redis.call('ZADD', bk .. ':holds', expires, id)
  end
  budget_keep(bk, ttl)
end

local function budget_settle(bk, id, actual, ttl)
  local f = 'h:' .. id
  local held = redis.call('HGET', bk, f)
  if held then
    if held ~= '0' then redis.call('HINCRBY', bk, 'reserved', '-' .. held) end
    redis.call('HDEL', bk, f)
    redis.call('ZREM', bk .. ':holds', id)
  end
  if actual ~= '0' then
    redis.call('HINCRBY', bk, 'spent', actual)
    budget_keep(bk, ttl)
  end
end
"""

# The hot path, admission. Everything a gateway call needs, checked and taken in one go.
# KEYS: requests zset, requests units, tokens zset, tokens units, leases, budget hashes...
# ARGV: id, window ms, rpm, tpm, tokens, max concurrency, lease ms, amount (picodollars),
#       then per budget: limit (picodollars, '' = track only), key ttl ms (0 = keep).
# Reply: {0, now} admitted | {1, budget index, spent, reserved} | {2, wait ms} rpm |
#        {3, wait ms} tpm | {4, ms until the oldest lease expires} concurrency.
ADMIT: Final = LuaScript(
    "admit",
    _NOW
    + _WINDOW
    + _BUDGET
    + """
local id = ARGV[1]
local window = tonumber(ARGV[2])
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local tokens = tonumber(ARGV[5])
local conc = tonumber(ARGV[6])
local lease = tonumber(ARGV[7])
local amount = ARGV[8]
local now = now_ms()
local budgets = #KEYS - 5
-- A budget refusal is final (waiting cannot help), so budgets are checked first.
for i = 1, budgets do
  local bk = KEYS[5 + i]
  budget_evict(bk, now)
  local limit = ARGV[7 + 2 * i]
  if limit ~= '' then
    local fits, spent, reserved = budget_fits(bk, amount, limit)
    if not fits then return {1, i, spent, reserved} end
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= conc then
    local first = redis.call('ZRANGE', KEYS[5], 0, 0, 'WITHSCORES')
    return {4, math.max(tonumber(first[2]) - now, 1)}
  end
end
local cutoff = now - window
if rpm > 0 then
  local used = window_evict(KEYS[1], KEYS[2], cutoff)
  if used + 1 > rpm then
    return {2, window_wait(KEYS[1], KEYS[2], used + 1 - rpm, now, window)}
  end
end
if tpm > 0 and tokens > 0 then
  local used = window_evict(KEYS[3], KEYS[4], cutoff)
  if used + tokens > tpm then
    return {3, window_wait(KEYS[3], KEYS[4], used + tokens - tpm, now, window)}
  end
end
if rpm > 0 then window_add(KEYS[1], KEYS[2], id, 1, now, window + 1000) end
if tpm > 0 and tokens > 0 then window_add(KEYS[3], KEYS[4], id, tokens, now, window + 1000) end
if conc > 0 then
  redis.call('ZADD', KEYS[5], now + lease, id)
  redis.call('PEXPIRE', KEYS[5], lease + 1000)
end
for i = 1, budgets do
  budget_hold(KEYS[5 + i], id, amount, now + lease, tonumber(ARGV[8 + 2 * i]))
end
return {0, now}
""",
)

# The hot path, settlement: real tokens, the lease back, the real cost into every budget.
# KEYS: tokens zset, tokens units, leases, budget hashes...
# ARGV: id, actual tokens ('' = keep the reservation), cost (picodollars), then per budget: ttl ms.
SETTLE: Final = LuaScript(
    "settle",
    _BUDGET
    + """
local id = ARGV[1]
if ARGV[2] ~= '' then
  local old = redis.call('HGET', KEYS[2], id)
  if old then
    local delta = tonumber(ARGV[2]) - tonumber(old)
    if delta ~= 0 then
      redis.call('HSET', KEYS[2], id, ARGV[2])
      redis.call('HINCRBY', KEYS[2], '=', delta)
    end
  end
end
redis.call('ZREM', KEYS[3], id)
for i = 4, #KEYS do
  budget_settle(KEYS[i], id, ARGV[3], tonumber(ARGV[i]))
end
return 1
""",
)

# `WindowStore.acquire`. KEYS: zset, units. ARGV: id, units, limit, window ms. Reply: wait ms.
WINDOW_ACQUIRE: Final = LuaScript(
    "window_acquire",
    _NOW
    + _WINDOW
    + """
local units = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local now = now_ms()
local used = window_evict(KEYS[1], KEYS[2], now - window)
if used + units > limit then
  return window_wait(KEYS[1], KEYS[2], used + units - limit, now, window)
end
window_add(KEYS[1], KEYS[2], ARGV[1], ARGV[2], now, window + 1000)
return 0
""",
)

# `WindowStore.settle`: a correcting entry dated like the original, so it leaves with it.
# KEYS: zset, units. ARGV: id, delta units, acquired at (epoch ms), window ms.
WINDOW_SETTLE: Final = LuaScript(
    "window_settle",
    _NOW
    + _WINDOW
    + """
local window = tonumber(ARGV[4])
local now = now_ms()
local at = math.min(tonumber(ARGV[3]), now)
if at + window <= now then return 0 end
window_add(KEYS[1], KEYS[2], ARGV[1], ARGV[2], at, window + 1000)
return 1
""",
)

# `BudgetStore.reserve`. KEYS: budget hashes. ARGV: id, amount, hold ms, then per key: limit
# ('' = none), ttl ms. Reply: {0} | {index of the first refusing key, spent, reserved}.
BUDGET_RESERVE: Final = LuaScript(
    "budget_reserve",
    _NOW
    + _BUDGET
    + """
local id = ARGV[1]
local amount = ARGV[2]
local now = now_ms()
local expires = now + tonumber(ARGV[3])
for i = 1, #KEYS do
  budget_evict(KEYS[i], now)
  local limit = ARGV[2 + 2 * i]
  if limit ~= '' then
    local fits, spent, reserved = budget_fits(KEYS[i], amount, limit)
    if not fits then return {i, spent, reserved} end
  end
end
for i = 1, #KEYS do budget_hold(KEYS[i], id, amount, expires, tonumber(ARGV[3 + 2 * i])) end
return {0}
""",
)

# `BudgetStore.settle`. KEYS: budget hashes. ARGV: id, actual (picodollars), then per key: ttl ms.
BUDGET_SETTLE: Final = LuaScript(
    "budget_settle",
    _BUDGET
    + """
for i = 1, #KEYS do budget_settle(KEYS[i], ARGV[1], ARGV[2], tonumber(ARGV[2 + i])) end
return 1
""",
)

# `BudgetStore.state`. KEYS: one budget hash. Reply: {spent, reserved}.
BUDGET_STATE: Final = LuaScript(
    "budget_state",
    _NOW
    + _BUDGET
    + """
budget_evict(KEYS[1], now_ms())
local spent, reserved = budget_state(KEYS[1])
return {spent, reserved}
""",
)

# A breaker transition. KEYS: breaker hash. ARGV: op ('open' | 'probe' | 'unprobe' |
# 'close'), failures, ttl ms of an open breaker. Reply: server time (ms).
BREAKER_PUT: Final = LuaScript(
    "breaker_put",
    _NOW
    + """
local now = now_ms()
local op = ARGV[1]
if op == 'close' then
  redis.call('DEL', KEYS[1])
elseif op == 'open' then
  redis.call('HSET', KEYS[1], 'opened', now, 'failures', ARGV[2])
  redis.call('HDEL', KEYS[1], 'probe')
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
elseif op == 'probe' then
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'probe', now) end
elseif op == 'unprobe' then
  redis.call('HDEL', KEYS[1], 'probe')
end
return now
""",
)

# Every breaker at once. KEYS: breaker hashes. Reply: {now, then per key: opened, failures,
# probe} with '' where unset.
BREAKER_READ: Final = LuaScript(
    "breaker_read",
    _NOW
    + """
local out = {now_ms()}
for i = 1, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'opened', 'failures', 'probe')
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or ''
  out[#out + 1] = v[3] or ''
end
return out
""",
)

SCRIPTS: Final = (
    ADMIT,
    SETTLE,
    WINDOW_ACQUIRE,
    WINDOW_SETTLE,
    BUDGET_RESERVE,
    BUDGET_SETTLE,
    BUDGET_STATE,
    BREAKER_PUT,
    BREAKER_READ,
)
