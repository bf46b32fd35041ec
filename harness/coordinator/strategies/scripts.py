"""Lua scripts the Redis strategies run, built from shared fragments.

Each take-slot script uses the same KEYS and ARGV so that callers can pass the
same lists to any of them:

KEYS: 1 metadata, 2 available_slots, 3 slot -> item hash, 4 item -> slot hash,
5 assignments, 6 failures, 7 the batch_ready stream.
ARGV: 1 item id (content or failure id), 2 key TTL in seconds, 3 batch id.

They return ``{outcome}`` or ``{outcome, slot}``; outcome is one of
``not_found``, ``replay``, ``no_slot``, ``created`` or ``completed`` (created,
and the batch_ready entry appended).
"""

from __future__ import annotations

# Encodes a hash as a JSON object; cjson encodes an empty Lua table as {}.
_HASH_AS_JSON = """
local function hash_as_json(key)
  local flat = redis.call('HGETALL', key)
  local map = {}
  for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
  return cjson.encode(map)
end
"""

_REQUIRE_BATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
"""

_DEDUP = """
local existing = redis.call('HGET', KEYS[4], ARGV[1])
if existing then return {'replay', existing} end
"""

_POP_AND_RECORD = """
local slot = redis.call('SPOP', KEYS[2])
if not slot then return {'no_slot'} end
redis.call('HSET', KEYS[3], slot, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], slot)
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[2])
"""

_COMPLETE_WHEN_FULL = """
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('XADD', KEYS[7], '*', 'batch_id', ARGV[3],
    'assignments', hash_as_json(KEYS[5]), 'failures', hash_as_json(KEYS[6]))
  return {'completed', slot}
end
"""

_CREATED = """
return {'created', slot}
"""

# The lua strategy: dedup, pop, record and completion in one atomic step.
TAKE_SLOT = (
    _HASH_AS_JSON + _REQUIRE_BATCH + _DEDUP + _POP_AND_RECORD + _COMPLETE_WHEN_FULL
) + _CREATED

# check-then-act: the same step minus the dedup, which that strategy reads
# beforehand in a separate round trip.
POP_AND_RECORD_UNCHECKED = (
    _HASH_AS_JSON + _REQUIRE_BATCH + _POP_AND_RECORD + _COMPLETE_WHEN_FULL + _CREATED
)

# double-completion: dedup, pop and record, with completion left to a later read.
TAKE_SLOT_WITHOUT_COMPLETION = _REQUIRE_BATCH + _DEDUP + _POP_AND_RECORD + _CREATED

# lua-partial-write: pops first and only then looks for the item's slot. For
# an item that has one, it returns the error "ALREADY_ASSIGNED <slot>", written
# as if the error undid the SPOP. Redis keeps every write a script made before
# an error reply or a Lua error, so the popped slot is in no set and no hash.
TAKE_SLOT_POP_FIRST = (
    _HASH_AS_JSON
    + _REQUIRE_BATCH
    + """
local slot = redis.call('SPOP', KEYS[2])
local existing = redis.call('HGET', KEYS[4], ARGV[1])
if existing then
  return redis.error_reply('ALREADY_ASSIGNED ' .. existing)
end
if not slot then return {'no_slot'} end
redis.call('HSET', KEYS[3], slot, ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], slot)
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('EXPIRE', KEYS[4], ARGV[2])
"""
    + _COMPLETE_WHEN_FULL
    + _CREATED
)

# pop-then-record's second round trip, after its SPOP: records the popped slot,
# drops the claim and appends batch_ready if the SPOP emptied the set.
# KEYS: 1 slot -> item hash, 2 item -> slot hash, 3 assignments, 4 failures,
# 5 stream, 6 claim. ARGV: 1 item id, 2 slot, 3 TTL, 4 batch id, 5 "1" to emit.
RECORD_POPPED_SLOT = (
    _HASH_AS_JSON
    + """
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[6])
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[5], '*', 'batch_id', ARGV[4],
    'assignments', hash_as_json(KEYS[3]), 'failures', hash_as_json(KEYS[4]))
  return 1
end
return 0
"""
)

# Registration, shared by every Redis strategy. Returns 1 when it created the
# batch, 0 when the batch exists with the same slots, -1 when with other slots.
# KEYS: 1 metadata, 2 available_slots. ARGV: 1 sorted slot ids as JSON, 2 TTL,
# 3 created_ns, 4... the slot ids.
REGISTER_BATCH = """
local stored = redis.call('HGET', KEYS[1], 'slot_ids')
if stored then
  if stored == ARGV[1] then return 0 end
  return -1
end
-- unpack() of Redis's Lua 5.1 fails past about 8000 values, so add in chunks.
for first = 4, #ARGV, 1000 do
  redis.call('SADD', KEYS[2], unpack(ARGV, first, math.min(first + 999, #ARGV)))
end
redis.call('HSET', KEYS[1], 'capacity', #ARGV - 3, 'slot_ids', ARGV[1],
  'created_ns', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# The postgres strategy's relay: appends batch_ready once per batch, even when
# a relay that crashed after the XADD but before marking its outbox row is
# repeated. KEYS: 1 ready_relayed marker, 2 stream. ARGV: 1 batch id,
# 2 assignments JSON, 3 failures JSON, 4 TTL of the marker.
RELAY_BATCH_READY = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[4]) then
  redis.call('XADD', KEYS[2], '*', 'batch_id', ARGV[1],
    'assignments', ARGV[2], 'failures', ARGV[3])
  return 1
end
return 0
"""
