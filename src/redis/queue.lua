-- One spool queue on Redis: every operation that reads or changes the
-- queue is one call of this script, so it is atomic, and a dropped
-- connection or a failed call leaves nothing half done.
--
-- KEYS (all under one hash tag, so a queue lives on one cluster shard):
--   1 ready    LIST  ids, oldest first
--   2 delayed  ZSET  id -> visible at (ms)
--   3 leased   ZSET  id -> lease deadline (ms)
--   4 lease    HASH  id -> current lease token
--   5 msg      HASH  id -> payload (the message type's codec bytes)
--   6 meta     HASH  id -> JSON: n receives, e enqueued at, k key,
--                     m max_receives, x expires at, err [texts],
--                     dr/dt/da dead-letter reason kind, text, time
--   7 dead     ZSET  id -> id (dead letters in id order)
--   8 keys     HASH  idempotency key -> "id:payload fingerprint"
--   9 keyexp   ZSET  key -> end of its window (ms)
--  10 expiry   ZSET  id -> end of its time to live (ms)
--  11 stats    HASH  counters
--  12 closed   STRING
--  13 wake     LIST  tokens for receivers blocked in BLPOP
--  14 room     LIST  tokens for senders blocked in BLPOP
--  15 seq      STRING message id counter
--  16 tok      STRING lease token counter
--
-- ARGV: 1 operation, 2 max_receives, 3 backoff kind (none|fixed|exp),
-- 4 fixed or initial delay (ms), 5 maximum delay (ms), 6 jitter (0|1),
-- 7 a random number for the jitter, 8 capacity, 9 dedup window (ms),
-- 10 compare keys only (0|1), then the operation's own from 11.
--
-- Every time is the server's clock (TIME), in milliseconds, so processes
-- on machines with skewed clocks agree.

local READY, DELAYED, LEASED, LEASE, MSG, META, DEAD = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local KEYIDS, KEYEXP, EXPIRY, STATS, CLOSED, WAKE, ROOM = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local SEQ, TOK = KEYS[15], KEYS[16]

local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local OP = ARGV[1]
local MAX_RECEIVES = tonumber(ARGV[2])
local BACKOFF, BACKOFF_A, BACKOFF_B = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local JITTER, SALT = ARGV[6] == '1', tonumber(ARGV[7])
local CAPACITY, DEDUP_MS, KEY_ONLY = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10] == '1'
local A = 11
local BATCH = 1024 -- the most of each kind one call moves when time passes

local function get_meta(id)
  local raw = redis.call('HGET', META, id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function put_meta(id, m)
  redis.call('HSET', META, id, cjson.encode(m))
end

-- Wakes up to n blocked receivers (or senders): the token lists stay short.
local function wake(list, n)
  if n <= 0 then return end
  local tokens = {}
  for i = 1, math.min(n, 64) do tokens[i] = '1' end
  redis.call('LPUSH', list, unpack(tokens))
  redis.call('LTRIM', list, 0, 255)
end

local function held()
  return redis.call('LLEN', READY) + redis.call('ZCARD', DELAYED) + redis.call('ZCARD', LEASED)
end

-- Backoff::delay in milliseconds: the delay before attempt n + 1.
local function backoff(n)
  if BACKOFF == 'none' then return 0 end
  if BACKOFF == 'fixed' then return BACKOFF_A end
  local doublings = math.min(math.max(n - 1, 0), 63)
  local full = math.min(BACKOFF_A * (2 ^ doublings), BACKOFF_B)
  if JITTER then
    local half = math.floor(full / 2)
    SALT = (SALT * 1103515245 + 12345) % 2147483648
    return half + SALT % (full - half + 1)
  end
  return full
end

-- A message leaves the queue for the dead-letter queue at `at`.
local function bury(id, m, kind, text, at)
  m.dr, m.dt, m.da, m.x = kind, text, at, nil
  put_meta(id, m)
  redis.call('ZADD', DEAD, id, id)
  redis.call('ZREM', EXPIRY, id)
  redis.call('HINCRBY', STATS, 'dead_lettered', 1)
  wake(ROOM, 1)
end

local function make_visible(id, at)
  if at <= NOW then
    redis.call('RPUSH', READY, id)
    wake(WAKE, 1)
  else
    redis.call('ZADD', DELAYED, at, id)
  end
end

-- After a failed attempt at `at`: dead-lettered if its receives are used
-- up, otherwise visible again after `delay` (nil: the backoff).
local function after_failure(id, m, at, delay)
  if m.n >= (m.m or MAX_RECEIVES) then
    bury(id, m, 'max', nil, at)
    return
  end
  put_meta(id, m)
  make_visible(id, at + (delay or backoff(m.n)))
end

-- Whatever time has made due: delayed messages become ready, expired
-- leases count as failed attempts (as of their deadline), and messages
-- never received whose time to live ran out are dead-lettered.
local function reclaim()
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, BATCH)
  if #due > 0 then
    redis.call('ZREM', DELAYED, unpack(due))
    redis.call('RPUSH', READY, unpack(due))
    wake(WAKE, #due)
  end
  local gone = redis.call('ZRANGEBYSCORE', LEASED, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  for i = 1, #gone, 2 do
    local id, at = gone[i], tonumber(gone[i + 1])
    redis.call('ZREM', LEASED, id)
    redis.call('HDEL', LEASE, id)
    redis.call('HINCRBY', STATS, 'expired', 1)
    local m = get_meta(id)
    if m then after_failure(id, m, at, nil) end
  end
  local dying = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  for i = 1, #dying, 2 do
    local id, at = dying[i], tonumber(dying[i + 1])
    redis.call('ZREM', EXPIRY, id)
    local m = get_meta(id)
    if m and m.n == 0 then
      local found = redis.call('LREM', READY, 1, id)
      if found == 0 then found = redis.call('ZREM', DELAYED, id) end
      if found > 0 then bury(id, m, 'exp', nil, at) end
    end
  end
  local old = redis.call('ZRANGEBYSCORE', KEYEXP, '-inf', NOW, 'LIMIT', 0, BATCH)
  if #old > 0 then
    redis.call('ZREM', KEYEXP, unpack(old))
    redis.call('HDEL', KEYIDS, unpack(old))
  end
end

-- The earliest time something comes due (-1 if nothing will).
local function next_due()
  local best = -1
  for _, key in ipairs({DELAYED, LEASED, EXPIRY}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #first > 0 then
      local at = tonumber(first[2])
      if best < 0 or at < best then best = at end
    end
  end
  return best
end

local function forget(id)
  redis.call('HDEL', MSG, id)
  redis.call('HDEL', META, id)
  redis.call('ZREM', EXPIRY, id)
end

-- The lease `token` still holds message `id`.
local function holds(id, token)
  return redis.call('HGET', LEASE, id) == token
end

local function unlease(id)
  redis.call('ZREM', LEASED, id)
  redis.call('HDEL', LEASE, id)
end

local function letter(id)
  return {id, redis.call('HGET', MSG, id), redis.call('HGET', META, id)}
end

local ops = {}

-- ARGV[A]: how many messages; then per message: payload, key ('' none),
-- payload fingerprint, any payload is a duplicate (0|1), delay (ms),
-- visible at (ms, '' none), max_receives ('' none), time to live (ms, '' none).
function ops.send()
  if redis.call('EXISTS', CLOSED) == 1 then return {'closed'} end
  reclaim()
  local n = tonumber(ARGV[A])
  local key, fp, any = ARGV[A + 2], ARGV[A + 3], ARGV[A + 4] == '1'
  if n == 1 and key ~= '' then
    local seen = redis.call('HGET', KEYIDS, key)
    if seen then
      local sep = string.find(seen, ':', 1, true)
      local id, first_fp = string.sub(seen, 1, sep - 1), string.sub(seen, sep + 1)
      if any or KEY_ONLY or first_fp == fp then
        redis.call('HINCRBY', STATS, 'duplicates', 1)
        return {'dup', id}
      end
      return {'conflict', id}
    end
  end
  if held() + n > CAPACITY then return {'full'} end
  local ids = {'ok'}
  for i = 0, n - 1 do
    local at = A + 1 + i * 8
    local id = redis.call('INCR', SEQ)
    local m = {n = 0, e = NOW}
    if ARGV[at + 1] ~= '' then
      m.k = ARGV[at + 1]
      redis.call('HSET', KEYIDS, m.k, id .. ':' .. ARGV[at + 2])
      redis.call('ZADD', KEYEXP, NOW + DEDUP_MS, m.k)
    end
    if ARGV[at + 6] ~= '' then m.m = tonumber(ARGV[at + 6]) end
    if ARGV[at + 7] ~= '' then
      m.x = NOW + tonumber(ARGV[at + 7])
      redis.call('ZADD', EXPIRY, m.x, id)
    end
    redis.call('HSET', MSG, id, ARGV[at])
    put_meta(id, m)
    local visible = NOW + tonumber(ARGV[at + 4])
    if ARGV[at + 5] ~= '' then visible = tonumber(ARGV[at + 5]) end
    make_visible(id, visible)
    ids[#ids + 1] = id
  end
  redis.call('HINCRBY', STATS, 'sent', n)
  return ids
end

-- ARGV[A]: visibility timeout (ms), ARGV[A + 1]: the most to take.
function ops.recv()
  reclaim()
  local visibility, max = tonumber(ARGV[A]), tonumber(ARGV[A + 1])
  local token, deadline = nil, NOW + visibility
  local out = {'ok', 0, deadline}
  local taken = 0
  while taken < max do
    local id = redis.call('LPOP', READY)
    if not id then break end
    local m = get_meta(id)
    if m then
      if m.n == 0 and m.x and m.x <= NOW then
        bury(id, m, 'exp', nil, m.x)
      else
        token = token or tostring(redis.call('INCR', TOK))
        m.n = m.n + 1
        m.x = nil
        put_meta(id, m)
        redis.call('ZREM', EXPIRY, id)
        redis.call('ZADD', LEASED, deadline, id)
        redis.call('HSET', LEASE, id, token)
        out[#out + 1] = id
        out[#out + 1] = redis.call('HGET', MSG, id)
        out[#out + 1] = cjson.encode(m)
        taken = taken + 1
      end
    end
  end
  if taken > 0 then
    out[2] = token
    return out
  end
  if redis.call('EXISTS', CLOSED) == 1 and held() == 0 then return {'closed'} end
  return {'empty', next_due(), NOW}
end

-- ARGV[A]: token, then ids. Returns how many were acknowledged and the
-- first id whose lease was no longer held (0 if none).
function ops.ack()
  reclaim()
  local token, acked, lost = ARGV[A], 0, 0
  for i = A + 1, #ARGV do
    local id = ARGV[i]
    if holds(id, token) then
      unlease(id)
      forget(id)
      acked = acked + 1
    elseif lost == 0 then
      lost = id
    end
  end
  if acked > 0 then
    redis.call('HINCRBY', STATS, 'acked', acked)
    wake(ROOM, acked)
  end
  return {acked, lost}
end

-- ARGV[A]: token, A + 1: delay (ms, '' the backoff), A + 2: has an error
-- text (0|1), A + 3: the text, then ids.
function ops.release()
  reclaim()
  local token, delay = ARGV[A], tonumber(ARGV[A + 1])
  local has_error, text = ARGV[A + 2] == '1', ARGV[A + 3]
  local released, lost = 0, 0
  for i = A + 4, #ARGV do
    local id = ARGV[i]
    if holds(id, token) then
      unlease(id)
      local m = get_meta(id)
      if has_error then
        m.err = m.err or {}
        m.err[#m.err + 1] = text
      end
      redis.call('HINCRBY', STATS, 'nacked', 1)
      after_failure(id, m, NOW, delay)
      released = released + 1
    elseif lost == 0 then
      lost = id
    end
  end
  return {released, lost}
end

-- ARGV[A]: token, A + 1: reason, then ids.
function ops.reject()
  reclaim()
  local token, reason = ARGV[A], ARGV[A + 1]
  local done, lost = 0, 0
  for i = A + 2, #ARGV do
    local id = ARGV[i]
    if holds(id, token) then
      unlease(id)
      bury(id, get_meta(id), 'rej', reason, NOW)
      done = done + 1
    elseif lost == 0 then
      lost = id
    end
  end
  return {done, lost}
end

-- ARGV[A]: token, A + 1: by (ms), then ids. Returns the new deadline and
-- the first id whose lease was no longer held (0 if none).
function ops.extend()
  reclaim()
  local token, deadline = ARGV[A], NOW + tonumber(ARGV[A + 1])
  local lost = 0
  for i = A + 2, #ARGV do
    local id = ARGV[i]
    if holds(id, token) then
      redis.call('ZADD', LEASED, 'XX', deadline, id)
    elseif lost == 0 then
      lost = id
    end
  end
  return {deadline, lost}
end

-- ARGV[A]: token, A + 1: id. The lease's deadline, or -1.
function ops.deadline()
  reclaim()
  if not holds(ARGV[A + 1], ARGV[A]) then return -1 end
  return tonumber(redis.call('ZSCORE', LEASED, ARGV[A + 1]))
end

function ops.stats()
  reclaim()
  local oldest = -1
  local head = redis.call('LINDEX', READY, 0)
  if head then
    local m = get_meta(head)
    if m then oldest = m.e end
  end
  return {redis.call('LLEN', READY), redis.call('ZCARD', DELAYED), redis.call('ZCARD', LEASED),
    redis.call('ZCARD', DEAD), oldest, NOW, redis.call('EXISTS', CLOSED),
    redis.call('HGETALL', STATS)}
end

function ops.close()
  redis.call('SET', CLOSED, '1')
  wake(WAKE, 64)
  wake(ROOM, 64)
  return 1
end

-- ARGV[A]: the most to show.
function ops.peek()
  reclaim()
  local out = {}
  for _, id in ipairs(redis.call('LRANGE', READY, 0, tonumber(ARGV[A]) - 1)) do
    local item = letter(id)
    for _, v in ipairs(item) do out[#out + 1] = v end
  end
  return out
end

-- ARGV[A]: an id, or '' for all: dead letters as id, payload, meta.
function ops.letters()
  local ids
  if ARGV[A] == '' then
    ids = redis.call('ZRANGE', DEAD, 0, -1)
  elseif redis.call('ZSCORE', DEAD, ARGV[A]) then
    ids = {ARGV[A]}
  else
    ids = {}
  end
  local out = {}
  for _, id in ipairs(ids) do
    for _, v in ipairs(letter(id)) do out[#out + 1] = v end
  end
  return out
end

-- ARGV[A]: replace the payload (0|1), A + 1: the payload, then ids, in
-- order. Returns {'ok', moved} or {'full', moved} or {'missing', id}
-- (for a single id only; several skip the ones gone meanwhile).
function ops.redrive()
  if redis.call('EXISTS', CLOSED) == 1 then return {'closed', 0} end
  reclaim()
  local fixed, payload = ARGV[A] == '1', ARGV[A + 1]
  local single = #ARGV == A + 2
  local moved = 0
  for i = A + 2, #ARGV do
    local id = ARGV[i]
    if redis.call('ZSCORE', DEAD, id) then
      if held() + 1 > CAPACITY then return {'full', moved} end
      redis.call('ZREM', DEAD, id)
      local m = get_meta(id)
      m.n, m.err, m.dr, m.dt, m.da, m.x = 0, nil, nil, nil, nil, nil
      put_meta(id, m)
      if fixed then redis.call('HSET', MSG, id, payload) end
      redis.call('RPUSH', READY, id)
      wake(WAKE, 1)
      moved = moved + 1
    elseif single then
      return {'missing', id}
    end
  end
  redis.call('HINCRBY', STATS, 'redriven', moved)
  return {'ok', moved}
end

-- ARGV[A]: an id, or '' for all. Returns the letters removed.
function ops.remove()
  local out = ops.letters()
  local n = 0
  for i = 1, #out, 3 do
    redis.call('ZREM', DEAD, out[i])
    forget(out[i])
    n = n + 1
  end
  redis.call('HINCRBY', STATS, 'purged', n)
  return out
end

-- ARGV[A]: 'id' or 'key', A + 1: which.
function ops.cancel()
  reclaim()
  local id = ARGV[A + 1]
  if ARGV[A] == 'key' then
    local seen = redis.call('HGET', KEYIDS, id)
    if not seen then return {'unknown'} end
    id = string.sub(seen, 1, string.find(seen, ':', 1, true) - 1)
  end
  local where = 'ready'
  if redis.call('LREM', READY, 1, id) == 0 then
    where = 'delayed'
    if redis.call('ZREM', DELAYED, id) == 0 then return {'missing', id} end
  end
  forget(id)
  redis.call('HINCRBY', STATS, 'cancelled', 1)
  wake(ROOM, 1)
  return {where, id}
end

local op = ops[OP]
if not op then return redis.error_reply('spool: unknown operation ' .. tostring(OP)) end
return op()
