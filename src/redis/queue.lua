#!lua name=spool_3
-- One spool queue on Redis, as a function library: every operation that
-- reads or changes the queue is one call of `spool_3_send` (sends) or
-- `spool_3_op` (everything else), so it is atomic. The library is loaded
-- once (FUNCTION LOAD) and each call runs only its own operation, in as
-- few commands as it can: each costs about a microsecond of the server's
-- one thread.
--
-- KEYS (all under one hash tag, so a queue lives on one cluster shard):
--   1 ready    LIST  ids, oldest first
--   2 delayed  ZSET  id -> visible at (ms)
--   3 leased   ZSET  id -> lease deadline (ms)
--   4 lease    HASH  id -> current lease token
--   5 data     HASH  p<id> -> payload (the message type's codec bytes)
--                    m<id> -> JSON: e enqueued at, k key, m max_receives,
--                             x expires at, err [texts], dr/dt/da the
--                             dead-letter reason kind, text and time
--                    n<id> -> receives so far (absent: none)
--   6 dead     ZSET  id -> id (dead letters in id order)
--   7 keys     HASH  idempotency key -> "id:payload fingerprint"
--   8 keyexp   ZSET  key -> end of its window (ms)
--   9 expiry   ZSET  id -> end of its time to live (ms)
--  10 state    HASH  closed, due (the earliest time anything in 2, 3, 8,
--                    9 comes due; absent when nothing will), held
--                    (messages ready, delayed or in flight), seq (ids),
--                    tok (lease tokens), and the counters of `stats()`
--  11 wake     LIST  tokens for receivers blocked in BLPOP
--  12 room     LIST  tokens for senders blocked in BLPOP
--  13 waiting  ZSET  receiver -> until when it waits on 11 (ms)
--  14 wanting  ZSET  sender -> until when it waits on 12 (ms)
--
-- args: 1 operation, 2 max_receives, 3 backoff kind (none|fixed|exp),
-- 4 fixed or initial delay (ms), 5 maximum delay (ms), 6 jitter (0|1),
-- 7 a random number for the jitter, 8 capacity, 9 dedup window (ms),
-- 10 compare keys only (0|1), then the operation's own from 11.
--
-- Every time is the server's clock (TIME), in milliseconds, so processes
-- on machines with skewed clocks agree.

local READY, DELAYED, LEASED, LEASE, DATA, DEAD, KEYIDS, KEYEXP, EXPIRY
local STATE, WAKE, ROOM, WAITING, WANTING
local NOW, ARGV, MAX_RECEIVES, BACKOFF, BACKOFF_A, BACKOFF_B, JITTER, SALT
local CAPACITY, DEDUP_MS, KEY_ONLY
-- From `state`, read once per call.
local CLOSED, DUE, HELD
local A = 11
local BATCH = 1024 -- the most of each kind one call moves when time passes
local CHUNK = 1000 -- the most arguments one variadic command is given
-- How long a caller that blocks counts as waiting: longer than one of its
-- waits (POLL in mod.rs), so that one that died is soon forgotten.
local WAIT_MS = 2000

local function setup(keys, args)
  READY, DELAYED, LEASED, LEASE, DATA = keys[1], keys[2], keys[3], keys[4], keys[5]
  DEAD, KEYIDS, KEYEXP, EXPIRY, STATE = keys[6], keys[7], keys[8], keys[9], keys[10]
  WAKE, ROOM, WAITING, WANTING = keys[11], keys[12], keys[13], keys[14]
  local clock = redis.call('TIME')
  NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  ARGV = args
  MAX_RECEIVES = tonumber(args[2])
  BACKOFF, BACKOFF_A, BACKOFF_B = args[3], tonumber(args[4]), tonumber(args[5])
  JITTER, SALT = args[6] == '1', tonumber(args[7])
  CAPACITY, DEDUP_MS, KEY_ONLY = tonumber(args[8]), tonumber(args[9]), args[10] == '1'
  local state = redis.call('HMGET', STATE, 'closed', 'due', 'held')
  CLOSED, DUE, HELD = state[1] == '1', tonumber(state[2]), tonumber(state[3]) or 0
end

-- `command key item...` over `items`, in chunks.
local function variadic(command, key, items)
  for first = 1, #items, CHUNK do
    redis.call(command, key, unpack(items, first, math.min(first + CHUNK - 1, #items)))
  end
end

-- `HMGET key field...` over `fields`, in chunks: Lua's unpack takes only
-- a few thousand values.
local function hmget(key, fields)
  local out = {}
  for first = 1, #fields, CHUNK do
    local part = redis.call('HMGET', key, unpack(fields, first, math.min(first + CHUNK - 1, #fields)))
    for i = 1, #part do out[first + i - 1] = part[i] end
  end
  return out
end

local function get_meta(id)
  local raw = redis.call('HGET', DATA, 'm' .. id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function put_meta(id, m)
  redis.call('HSET', DATA, 'm' .. id, cjson.encode(m))
end

local function receives(id)
  return tonumber(redis.call('HGET', DATA, 'n' .. id)) or 0
end

local function count(field, n)
  if n ~= 0 then redis.call('HINCRBY', STATE, field, n) end
end

-- Wakes up to n of the callers waiting in `waiters` that block on `list`.
-- Nothing is pushed when nobody waits, and at most one token per waiter
-- stays on the list.
local function wake(list, waiters, n)
  local waiting = redis.call('ZCOUNT', waiters, NOW, '+inf')
  if waiting <= 0 or n <= 0 then return end
  local tokens = {}
  for i = 1, math.min(n, waiting, 64) do tokens[i] = '1' end
  redis.call('LPUSH', list, unpack(tokens))
  redis.call('LTRIM', list, 0, waiting - 1)
end

local function count_held(n)
  if n ~= 0 then
    HELD = HELD + n
    redis.call('HSET', STATE, 'held', HELD)
    -- Closed and now drained: blocked receivers return Closed at once.
    if CLOSED and HELD == 0 then wake(WAKE, WAITING, 64) end
  end
end

-- Something comes due at `at`: the first call after it looks.
local function due_at(at)
  if not DUE or at < DUE then
    DUE = at
    redis.call('HSET', STATE, 'due', at)
  end
end


-- Caller `who` will block on `list`. With nobody else waiting, tokens
-- left over from earlier waiters are stale.
local function will_wait(list, waiters, who)
  redis.call('ZREMRANGEBYSCORE', waiters, '-inf', NOW - 1)
  if redis.call('ZCARD', waiters) == 0 then redis.call('DEL', list) end
  redis.call('ZADD', waiters, NOW + WAIT_MS, who)
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

-- A message that has left ready, delayed and in flight goes to the
-- dead-letter queue at `at`.
local function bury(id, m, kind, text, at)
  m.dr, m.dt, m.da, m.x = kind, text, at, nil
  put_meta(id, m)
  redis.call('ZADD', DEAD, id, id)
  redis.call('ZREM', EXPIRY, id)
  count('dead_lettered', 1)
  count_held(-1)
  wake(ROOM, WANTING, 1)
end

local function make_visible(id, at)
  if at <= NOW then
    redis.call('RPUSH', READY, id)
    wake(WAKE, WAITING, 1)
  else
    redis.call('ZADD', DELAYED, at, id)
    due_at(at)
  end
end

-- After failed attempt number `n` at `at`: dead-lettered if its receives
-- are used up, otherwise visible again after `delay` (nil: the backoff).
-- `m` is its metadata, changed or not.
local function after_failure(id, m, n, at, delay, changed)
  if n >= (m.m or MAX_RECEIVES) then
    bury(id, m, 'max', nil, at)
    return
  end
  if changed then put_meta(id, m) end
  make_visible(id, at + (delay or backoff(n)))
end

local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first > 0 then return tonumber(first[2]) end
  return nil
end

-- Whatever time has made due, once it is due: delayed messages become
-- ready, expired leases count as failed attempts (as of their deadline),
-- messages never received whose time to live ran out are dead-lettered,
-- and idempotency keys past their window are forgotten.
local function reclaim()
  if not DUE or DUE > NOW then return end
  local ready = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, BATCH)
  if #ready > 0 then
    variadic('ZREM', DELAYED, ready)
    variadic('RPUSH', READY, ready)
    wake(WAKE, WAITING, #ready)
  end
  local gone = redis.call('ZRANGEBYSCORE', LEASED, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  for i = 1, #gone, 2 do
    local id, at = gone[i], tonumber(gone[i + 1])
    redis.call('ZREM', LEASED, id)
    redis.call('HDEL', LEASE, id)
    count('expired', 1)
    local m = get_meta(id)
    if m then after_failure(id, m, receives(id), at, nil, false) end
  end
  local dying = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  for i = 1, #dying, 2 do
    local id, at = dying[i], tonumber(dying[i + 1])
    redis.call('ZREM', EXPIRY, id)
    local m = get_meta(id)
    if m and receives(id) == 0 then
      local found = redis.call('LREM', READY, 1, id)
      if found == 0 then found = redis.call('ZREM', DELAYED, id) end
      if found > 0 then bury(id, m, 'exp', nil, at) end
    end
  end
  local old = redis.call('ZRANGEBYSCORE', KEYEXP, '-inf', NOW, 'LIMIT', 0, BATCH)
  if #old > 0 then
    variadic('ZREM', KEYEXP, old)
    variadic('HDEL', KEYIDS, old)
  end
  local next = nil
  for _, key in ipairs({DELAYED, LEASED, EXPIRY, KEYEXP}) do
    local at = first_score(key)
    if at and (not next or at < next) then next = at end
  end
  DUE = next
  if next then redis.call('HSET', STATE, 'due', next) else redis.call('HDEL', STATE, 'due') end
end

-- The earliest time something comes due that a receive waits for (-1 if
-- nothing will).
local function next_due()
  local best = -1
  for _, key in ipairs({DELAYED, LEASED, EXPIRY}) do
    local at = first_score(key)
    if at and (best < 0 or at < best) then best = at end
  end
  return best
end

-- The data fields of `ids`: payload, metadata, receives.
local function fields(ids)
  local out = {}
  for _, id in ipairs(ids) do
    out[#out + 1] = 'p' .. id
    out[#out + 1] = 'm' .. id
    out[#out + 1] = 'n' .. id
  end
  return out
end

local function forget(ids)
  if #ids > 0 then
    variadic('HDEL', DATA, fields(ids))
    variadic('ZREM', EXPIRY, ids)
  end
end

-- Which of `ids` the lease `token` still holds, and the first it does not
-- (0 if none).
local function held_by(token, ids)
  local mine, lost, seen = {}, 0, {}
  if #ids == 0 then return mine, lost end
  local tokens = hmget(LEASE, ids)
  for i, id in ipairs(ids) do
    if tokens[i] == token and not seen[id] then
      seen[id] = true
      mine[#mine + 1] = id
    elseif lost == 0 then
      lost = id
    end
  end
  return mine, lost
end

local function unlease(ids)
  if #ids > 0 then
    variadic('ZREM', LEASED, ids)
    variadic('HDEL', LEASE, ids)
  end
end

-- Messages as the client reads them: id, payload, metadata, receives.
local function described(ids)
  local out = {}
  if #ids == 0 then return out end
  local values = hmget(DATA, fields(ids))
  for i, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = values[3 * i - 2]
    out[#out + 1] = values[3 * i - 1]
    out[#out + 1] = values[3 * i] or '0'
  end
  return out
end

-- The ids from ARGV[first] on.
local function ids_from(first)
  local ids = {}
  for i = first, #ARGV do ids[#ids + 1] = ARGV[i] end
  return ids
end

local ops = {}

-- ARGV[A]: how many messages, A + 1: the caller's name, A + 2: it
-- waited since its last call (0|1), A + 3: it will wait if there is no
-- room (0|1); then per message: payload, key ('' none, else 'k' and the
-- key), payload
-- fingerprint, any payload is a duplicate (0|1), delay (ms), visible at
-- (ms, '' none), max_receives ('' none), time to live (ms, '' none).
function ops.send()
  local who = ARGV[A + 1]
  if ARGV[A + 2] == '1' then redis.call('ZREM', WANTING, who) end
  if CLOSED then return {'closed'} end
  reclaim()
  local n = tonumber(ARGV[A])
  local first = A + 4
  local key, fp, any = ARGV[first + 1], ARGV[first + 2], ARGV[first + 3] == '1'
  if n == 1 and key ~= '' then
    key = string.sub(key, 2)
    local seen = redis.call('HGET', KEYIDS, key)
    if seen then
      local sep = string.find(seen, ':', 1, true)
      local id, first_fp = string.sub(seen, 1, sep - 1), string.sub(seen, sep + 1)
      if any or KEY_ONLY or first_fp == fp then
        count('duplicates', 1)
        return {'dup', id}
      end
      return {'conflict', id}
    end
  end
  if HELD + n > CAPACITY then
    if ARGV[A + 3] == '1' then will_wait(ROOM, WANTING, who) end
    return {'full'}
  end
  local last = redis.call('HINCRBY', STATE, 'seq', n)
  local ids, data, ready = {'ok'}, {}, {}
  for i = 0, n - 1 do
    local at = first + i * 8
    local id = last - n + 1 + i
    local meta = '{"e":' .. NOW .. '}'
    -- A key comes prefixed with 'k' ('' is no key; 'k' the empty key).
    local k, max, ttl = ARGV[at + 1], ARGV[at + 6], ARGV[at + 7]
    local keyed = k ~= ''
    if keyed then k = string.sub(k, 2) end
    if keyed or max ~= '' or ttl ~= '' then
      local m = {e = NOW}
      if keyed then
        m.k = k
        redis.call('HSET', KEYIDS, k, id .. ':' .. ARGV[at + 2])
        redis.call('ZADD', KEYEXP, NOW + DEDUP_MS, k)
        due_at(NOW + DEDUP_MS)
      end
      if max ~= '' then m.m = tonumber(max) end
      if ttl ~= '' then
        m.x = NOW + tonumber(ttl)
        redis.call('ZADD', EXPIRY, m.x, id)
        due_at(m.x)
      end
      meta = cjson.encode(m)
    end
    data[#data + 1] = 'p' .. id
    data[#data + 1] = ARGV[at]
    data[#data + 1] = 'm' .. id
    data[#data + 1] = meta
    local visible = NOW + tonumber(ARGV[at + 4])
    if ARGV[at + 5] ~= '' then visible = tonumber(ARGV[at + 5]) end
    if visible <= NOW then
      ready[#ready + 1] = id
    else
      redis.call('ZADD', DELAYED, visible, id)
      due_at(visible)
    end
    ids[#ids + 1] = id
  end
  variadic('HSET', DATA, data)
  if #ready > 0 then
    variadic('RPUSH', READY, ready)
    wake(WAKE, WAITING, #ready)
  end
  count_held(n)
  count('sent', n)
  return ids
end

-- ARGV[A]: visibility timeout (ms), A + 1: the most to take, A + 2: the
-- caller's name, A + 3: it waited since its last call (0|1), A + 4: it
-- will wait if there is nothing (0|1).
function ops.recv()
  local who = ARGV[A + 2]
  if ARGV[A + 3] == '1' then redis.call('ZREM', WAITING, who) end
  reclaim()
  local visibility, max = tonumber(ARGV[A]), tonumber(ARGV[A + 1])
  local deadline = NOW + visibility
  local popped = redis.call('LPOP', READY, max)
  if popped then
    -- Messages come and go only through these calls: every id popped has
    -- its data, and (reclaim having just run) none has outlived its time
    -- to live unless more than BATCH expired at once, in which case the
    -- rest are delivered rather than dead-lettered.
    local out = described(popped)
    -- Lease tokens start at a random point, so that a state the server
    -- lost (a restart without persistence) cannot hand out a token a
    -- stale delivery still holds.
    local token = redis.call('HINCRBY', STATE, 'tok', 1)
    if token == 1 then token = redis.call('HINCRBY', STATE, 'tok', SALT * 16384) end
    local counts, leases, tokens = {}, {}, {}
    for i, id in ipairs(popped) do
      local n = tonumber(out[4 * i]) + 1
      out[4 * i] = n
      counts[#counts + 1] = 'n' .. id
      counts[#counts + 1] = n
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      tokens[#tokens + 1] = id
      tokens[#tokens + 1] = token
    end
    variadic('HSET', DATA, counts)
    -- A time to live only applies to a message never received.
    variadic('ZREM', EXPIRY, popped)
    variadic('ZADD', LEASED, leases)
    variadic('HSET', LEASE, tokens)
    due_at(deadline)
    table.insert(out, 1, 'ok')
    table.insert(out, 2, token)
    return out
  end
  if CLOSED and HELD == 0 then return {'closed'} end
  if ARGV[A + 4] == '1' then will_wait(WAKE, WAITING, who) end
  return {'empty', next_due(), NOW}
end

-- ARGV[A]: token, then ids. Returns how many were acknowledged and the
-- first id whose lease was no longer held (0 if none).
function ops.ack()
  reclaim()
  local mine, lost = held_by(ARGV[A], ids_from(A + 1))
  if #mine > 0 then
    unlease(mine)
    variadic('HDEL', DATA, fields(mine))
    count_held(-#mine)
    count('acked', #mine)
    wake(ROOM, WANTING, #mine)
  end
  return {#mine, lost}
end

-- ARGV[A]: token, A + 1: delay (ms, '' the backoff), A + 2: has an error
-- text (0|1), A + 3: the text, then ids.
function ops.release()
  reclaim()
  local delay = tonumber(ARGV[A + 1])
  local has_error, text = ARGV[A + 2] == '1', ARGV[A + 3]
  local mine, lost = held_by(ARGV[A], ids_from(A + 4))
  unlease(mine)
  for _, id in ipairs(mine) do
    local m = get_meta(id)
    if has_error then
      m.err = m.err or {}
      m.err[#m.err + 1] = text
    end
    after_failure(id, m, receives(id), NOW, delay, has_error)
  end
  count('nacked', #mine)
  return {#mine, lost}
end

-- ARGV[A]: token, then ids: a receive whose caller is gone (an async
-- receive dropped while its call ran) is undone: each message goes back
-- to the front of the ready queue with its receive count as it was.
function ops.unreceive()
  reclaim()
  local mine, lost = held_by(ARGV[A], ids_from(A + 1))
  unlease(mine)
  for i = #mine, 1, -1 do
    local id = mine[i]
    local n = receives(id) - 1
    if n > 0 then
      redis.call('HSET', DATA, 'n' .. id, n)
    else
      redis.call('HDEL', DATA, 'n' .. id)
    end
    redis.call('LPUSH', READY, id)
  end
  wake(WAKE, WAITING, #mine)
  return {#mine, lost}
end

-- ARGV[A]: token, A + 1: reason, then ids.
function ops.reject()
  reclaim()
  local mine, lost = held_by(ARGV[A], ids_from(A + 2))
  unlease(mine)
  for _, id in ipairs(mine) do
    bury(id, get_meta(id), 'rej', ARGV[A + 1], NOW)
  end
  return {#mine, lost}
end

-- ARGV[A]: token, A + 1: by (ms), then ids. Returns the new deadline and
-- the first id whose lease was no longer held (0 if none).
function ops.extend()
  reclaim()
  local deadline = NOW + tonumber(ARGV[A + 1])
  local mine, lost = held_by(ARGV[A], ids_from(A + 2))
  for _, id in ipairs(mine) do
    redis.call('ZADD', LEASED, 'XX', deadline, id)
  end
  due_at(deadline)
  return {deadline, lost}
end

-- ARGV[A]: token, A + 1: id. The lease's deadline, or -1.
function ops.deadline()
  reclaim()
  if redis.call('HGET', LEASE, ARGV[A + 1]) ~= ARGV[A] then return -1 end
  return tonumber(redis.call('ZSCORE', LEASED, ARGV[A + 1]))
end

-- ARGV[A]: 'wake' or 'room', A + 1: the caller, who stops waiting.
function ops.unwait()
  local waiters = WAITING
  if ARGV[A] == 'room' then waiters = WANTING end
  redis.call('ZREM', waiters, ARGV[A + 1])
  return 1
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
    redis.call('ZCARD', DEAD), oldest, NOW, CLOSED and 1 or 0,
    redis.call('HGETALL', STATE)}
end

function ops.close()
  redis.call('HSET', STATE, 'closed', '1')
  wake(WAKE, WAITING, 64)
  wake(ROOM, WANTING, 64)
  return 1
end

-- ARGV[A]: how many: wakes that many blocked receivers (a worker pool
-- stopping).
function ops.wake()
  wake(WAKE, WAITING, tonumber(ARGV[A]))
  return 1
end

-- ARGV[A]: the most to show.
function ops.peek()
  reclaim()
  return described(redis.call('LRANGE', READY, 0, tonumber(ARGV[A]) - 1))
end

-- ARGV[A]: an id, or '' for all: dead letters, described.
function ops.letters()
  reclaim()
  if ARGV[A] == '' then return described(redis.call('ZRANGE', DEAD, 0, -1)) end
  if redis.call('ZSCORE', DEAD, ARGV[A]) then return described({ARGV[A]}) end
  return {}
end

-- ARGV[A]: replace the payload (0|1), A + 1: the payload, then ids, in
-- order, or '*' for every dead letter. Returns {'ok', moved} or {'full',
-- moved} or {'missing', id} (for a single id only; several skip the ones
-- gone meanwhile).
function ops.redrive()
  if CLOSED then return {'closed', 0} end
  reclaim()
  local fixed, payload = ARGV[A] == '1', ARGV[A + 1]
  local ids
  if ARGV[A + 2] == '*' then
    ids = redis.call('ZRANGE', DEAD, 0, -1)
  else
    ids = ids_from(A + 2)
  end
  local single = #ARGV == A + 2 and ARGV[A + 2] ~= '*'
  local moved = 0
  for _, id in ipairs(ids) do
    if redis.call('ZSCORE', DEAD, id) then
      if HELD + 1 > CAPACITY then
        count('redriven', moved)
        return {'full', moved}
      end
      redis.call('ZREM', DEAD, id)
      local m = get_meta(id)
      m.err, m.dr, m.dt, m.da, m.x = nil, nil, nil, nil, nil
      put_meta(id, m)
      redis.call('HDEL', DATA, 'n' .. id)
      if fixed then redis.call('HSET', DATA, 'p' .. id, payload) end
      redis.call('RPUSH', READY, id)
      count_held(1)
      wake(WAKE, WAITING, 1)
      moved = moved + 1
    elseif single then
      return {'missing', id}
    end
  end
  count('redriven', moved)
  return {'ok', moved}
end

-- ARGV[A]: an id, or '' for all. Returns the letters removed.
function ops.remove()
  local out = ops.letters()
  local ids = {}
  for i = 1, #out, 4 do ids[#ids + 1] = out[i] end
  if #ids > 0 then variadic('ZREM', DEAD, ids) end
  forget(ids)
  count('purged', #ids)
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
  forget({id})
  count_held(-1)
  count('cancelled', 1)
  wake(ROOM, WANTING, 1)
  return {where, id}
end

local function run(keys, args)
  setup(keys, args)
  local op = ops[args[1]]
  if not op then return redis.error_reply('spool: unknown operation ' .. tostring(args[1])) end
  return op()
end

-- Sends: refused before they start when the server is at maxmemory (a
-- typed error, nothing half done).
redis.register_function{function_name = 'spool_3_send', callback = run}
-- Everything else may run past maxmemory: receives and settlements free
-- memory or hold it steady, and a queue that cannot be acknowledged at
-- maxmemory would never drain.
redis.register_function{function_name = 'spool_3_op', callback = run, flags = {'allow-oom'}}
