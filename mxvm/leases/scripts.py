"""Lua scripts: each runs atomically inside Redis, so compare-then-act has no race."""

from __future__ import annotations

# KEYS: leader, epoch. ARGV: token, ttl_ms, min_epoch. Returns the new epoch, or nil if
# someone else holds the lease. Lease and epoch change together or not at all.
ACQUIRE_LEADERSHIP = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local epoch = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if epoch <= floor then
  epoch = floor + 1
  redis.call('SET', KEYS[2], epoch)
end
return epoch
"""

# KEYS: lease. ARGV: token, ttl_ms. 1 if the token still holds the lease (now extended).
COMPARE_AND_PEXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: token. 1 if the token held the lease (now deleted).
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lease. ARGV: token, ttl_ms. 1 if the lease was free or already ours (re-acquiring
# after an agent restart just extends it), 0 if someone else holds it.
ACQUIRE_OR_EXTEND = """
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
