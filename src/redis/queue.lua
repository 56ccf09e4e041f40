#!lua name=SPOOL_LIBRARY
-- One spool queue on Redis, as a function library: every operation that
-- reads or changes the queue is one call of a function of its own,
-- `SPOOL_LIBRARY_` and the operation's name (`ops`), so it is atomic. The client
-- names the library `spool_` and a hash of this file (mod.rs, `library`),
-- so that two versions of spool on one server each call their own. It is
-- loaded once (FUNCTION LOAD) and each call runs only its own operation.
--
-- What a call costs the server's one thread, in instructions (callgrind):
-- about 13,000 for a function call that does nothing, 1,300 more for
-- each argument and key it is given, 7,000 for TIME, 3,000 to 5,000 for
-- each command it makes, and 1,500 to 2,500 for each conversion between a
-- number and a string (Lua's `tonumber` and `..` on a number, and a
-- number passed to a command: they go through the C library's strtod and
-- printf). Hence: few arguments (the settings are one string, parsed only
-- when an operation needs them; a message without options is one
-- argument), few commands, few hash fields (a message is one record),
-- and ids, times and counts kept as the strings they arrive as wherever
-- they need not be numbers.
--
-- KEYS (all under one hash tag, so a queue lives on one cluster shard):
--   1 ready    LIST  ids, oldest first
--   2 delayed  ZSET  id -> visible at (ms), and a sentinel (ops.init)
--   3 leased   ZSET  id -> lease deadline (ms), and a sentinel
--   4 data     HASH  id -> the message's record, one string:
--                      "receives token metadata\npayload"
--                    receives so far, the token of its current lease
--                    ('-': none, which no token the client sends can
--                    match), the metadata (the time it was enqueued
--                    (ms) for a message sent without options, else JSON:
--                    e enqueued at, k key, m max_receives, x expires at,
--                    err [texts], dr/dt/da the dead-letter reason kind,
--                    text and time; never a newline), then the payload
--                    (the message type's codec bytes). One field, not
--                    four: each field a call reads, writes or deletes
--                    costs the server 1,000 to 2,000 instructions, and its
--                    name as many again to build; a batch cycle of send,
--                    receive and ack cost 25 % less so.
--                    k<key> -> "id:payload fingerprint", an idempotency
--                             key's message, for its window (below)
--                    ~ -> a sentinel (ops.init)
--   5 dead     ZSET  id -> id (dead letters in id order)
--   6 expiry   ZSET  id -> end of its time to live (ms)
--                    k<key> -> end of the key's window (ms)
--   7 state    HASH  closed, due (the earliest time anything in 2, 3, 6
--                    comes due; absent when nothing will), held
--                    (messages ready, delayed or in flight), seq (ids),
--                    tok (lease tokens), wr and ws (until when a receiver
--                    or a sender may be counted in 10 or 11; absent when
--                    none is), and the counters of `stats()`
--   8 wake     LIST  tokens for receivers blocked in BLPOP
--   9 room     LIST  tokens for senders blocked in BLPOP
--  10 waiting  ZSET  receiver -> until when it waits on 8 (ms)
--  11 wanting  ZSET  sender -> until when it waits on 9 (ms)
-- (Keys and their windows share 4 and 6 with the messages: a key less
-- is 1,300 instructions less on every call.)
--
-- ARGV: 1 the queue's settings, separated by spaces: capacity,
-- max_receives, backoff kind (none|fixed|exp), fixed or initial delay
-- (ms), maximum delay (ms), jitter (0|1), dedup window (ms), compare keys
-- only (0|1); then the operation's own from 2.
--
-- Every time is the server's clock (TIME), in milliseconds, so processes
-- on machines with skewed clocks agree.

-- `redis.call` and the library functions used on every call, bound on
-- the first call: a global costs a lookup on each use, and the library's
-- globals are not there while it loads.
local rcall, format, find, byte, sub, match, rep, spread, min, max, floor
-- '00' to '99'.
local TWO_DIGITS = {}

local function bind()
  rcall = redis.call
  format, find, byte, sub = string.format, string.find, string.byte, string.sub
  match, rep, spread = string.match, string.rep, unpack
  min, max, floor = math.min, math.max, math.floor
  for i = 0, 99 do TWO_DIGITS[i] = format('%02d', i) end
end
local READY, DELAYED, LEASED, DATA, DEAD, EXPIRY
local STATE, WAKE, ROOM, WAITING, WANTING
local NOW, NOW_TEXT, USEC, ARGV
-- The settings, once `settings()` has parsed them.
local PARSED, CAPACITY, MAX_RECEIVES, BACKOFF, BACKOFF_A, BACKOFF_B, JITTER
local DEDUP_MS, KEY_ONLY, SALT
-- From `state`: DUE a number (or false), read by every call; the others
-- as the server gave them (false when absent), read up front by the
-- operations that always need them (FIELDS) and by the others when they
-- do (nil: not read yet; `closed()`, `held()`).
local DUE, CLOSED, HELD, WR, WS, SEQ
local A = 2
local BATCH = 1024 -- the most of each kind one call moves when time passes
local CHUNK = 1000 -- the most arguments one variadic command is given
-- How long a caller that blocks counts as waiting: longer than one of its
-- waits (POLL in mod.rs), so that one that died is soon forgotten.
local WAIT_MS = 2000
-- Small counts as the strings a command takes, converted once here.
local TEXT = {[0] = '0', [1] = '1', [-1] = '-1'}


-- The state fields each operation reads up front (the others are read
-- when needed): each field read costs about 1,500 instructions.
local FIELDS = {
  send = {'due', 'closed', 'held', 'wr', 'seq'},
  ack = {'due', 'ws'},
}
local ALL_FIELDS = {'due', 'closed', 'held', 'wr', 'ws'}

local function setup(op, keys, args)
  READY, DELAYED, LEASED, DATA, DEAD = keys[1], keys[2], keys[3], keys[4], keys[5]
  EXPIRY, STATE, WAKE, ROOM = keys[6], keys[7], keys[8], keys[9]
  WAITING, WANTING = keys[10], keys[11]
  local clock = rcall('TIME')
  -- Arithmetic converts the strings itself, about 1,000 instructions
  -- cheaper than a call of `tonumber` (a global and a C function).
  local usec = clock[2] + 0
  NOW = clock[1] * 1000 + (usec - usec % 1000) / 1000
  NOW_TEXT, USEC, ARGV, PARSED, SALT, CAPACITY = nil, clock[2], args, false, nil, nil
  CLOSED, HELD, WR, WS, SEQ = nil, nil, nil, nil, nil
  if op == 'recv' then
    -- A receive needs only 'due' up front: HGET, cheaper than HMGET's
    -- array.
    local due = rcall('HGET', STATE, 'due')
    DUE = due and due + 0
    return
  end
  local fields = FIELDS[op] or ALL_FIELDS
  local values = rcall('HMGET', STATE, spread(fields))
  DUE = values[1] and values[1] + 0
  for i = 2, #fields do
    local name, value = fields[i], values[i]
    if name == 'closed' then CLOSED = value
    elseif name == 'held' then HELD = value
    elseif name == 'wr' then WR = value
    elseif name == 'ws' then WS = value
    else SEQ = value end
  end
end

-- An integer as the string a command takes (`tostring` and `..` format
-- with %.14g, which is slower and drops digits past 14).
local function int_text(n)
  return TEXT[n] or format('%d', n)
end

-- NOW as a string, converted once per call.
local function now_text()
  if not NOW_TEXT then NOW_TEXT = int_text(NOW) end
  return NOW_TEXT
end

-- A state field read only when an operation needs it.
local function field(name)
  return rcall('HGET', STATE, name)
end

local function held()
  if HELD == nil then HELD = field('held') end
  return HELD and HELD + 0 or 0
end

local function closed()
  if CLOSED == nil then CLOSED = field('closed') end
  return CLOSED == '1'
end

local function capacity()
  if not CAPACITY then CAPACITY = match(ARGV[1], '^%d+') + 0 end
  return CAPACITY
end

local function settings()
  if PARSED then return end
  local m, kind, a, b, j, d, k = match(ARGV[1],
    '^%d+ (%d+) (%a+) (%d+) (%d+) ([01]) (%d+) ([01])$')
  MAX_RECEIVES, BACKOFF, BACKOFF_A, BACKOFF_B = tonumber(m), kind, tonumber(a), tonumber(b)
  JITTER, DEDUP_MS, KEY_ONLY = j == '1', tonumber(d), k == '1'
  PARSED = true
end

-- `command key item...` over `items`, in chunks.
local function variadic(command, key, items)
  for first = 1, #items, CHUNK do
    rcall(command, key, spread(items, first, min(first + CHUNK - 1, #items)))
  end
end

-- `HMGET key field...` over `fields`, in chunks: Lua's unpack takes only
-- a few thousand values.
local function hmget(key, fields)
  if #fields == 0 then return {} end
  if #fields <= CHUNK then return rcall('HMGET', key, spread(fields)) end
  local out = {}
  for first = 1, #fields, CHUNK do
    local part = rcall('HMGET', key, spread(fields, first, min(first + CHUNK - 1, #fields)))
    for i = 1, #part do out[first + i - 1] = part[i] end
  end
  return out
end

-- A message's record (see DATA above) as a table, for the operations
-- that change more than its lease: n receives, tok its lease's token,
-- raw its metadata as stored, p the payload; `meta` decodes the metadata
-- into m. `v` is the record as read, or nil to read it. Nil if the
-- message is gone.
local function load(id, v)
  if v == nil then v = rcall('HGET', DATA, id) end
  if not v then return nil end
  local a = find(v, ' ', 1, true)
  local b = find(v, ' ', a + 1, true)
  local c = find(v, '\n', b + 1, true)
  return {n = sub(v, 1, a - 1) + 0, tok = sub(v, a + 1, b - 1),
    raw = sub(v, b + 1, c - 1), p = sub(v, c + 1)}
end

local function meta(r)
  if not r.m then
    local m = cjson.decode(r.raw)
    -- A message sent without options keeps only its enqueue time.
    if type(m) == 'number' then m = {e = m} end
    r.m = m
  end
  return r.m
end

local function store(id, r)
  local raw = r.raw
  if r.m then raw = cjson.encode(r.m) end
  rcall('HSET', DATA, id, int_text(r.n) .. ' ' .. r.tok .. ' ' .. raw .. '\n' .. r.p)
end

-- Whether record `v` is leased with `token`: "n token ...".
local function leased_with(v, token)
  if not v or token == '-' then return false end
  local a = find(v, ' ', 1, true)
  return sub(v, a + 1, a + #token) == token and byte(v, a + #token + 1) == 32
end

-- Whether record `v`, its metadata starting at `from`, has a time to
-- live (only a message sent with options has JSON metadata).
local function lives(v, from)
  if byte(v, from) ~= 123 then return false end
  local x = find(v, '"x":', from, true)
  return x ~= nil and x < find(v, '\n', from, true)
end

local function count(field, n)
  if n ~= 0 then rcall('HINCRBY', STATE, field, int_text(n)) end
end

-- Wakes up to n of the callers waiting in `waiters` that block on
-- `list`; `field` is the state field saying until when one may be
-- waiting (WR or WS), `until_at` its value. Nothing is pushed when nobody
-- waits (and with nobody counted lately, nothing is asked), and at most
-- one token per waiter stays on the list.
local function wake(list, waiters, field, until_at, n)
  if n <= 0 or not until_at or until_at + 0 < NOW then return end
  local waiting = rcall('ZCOUNT', waiters, NOW, '+inf')
  if waiting <= 0 then
    rcall('HDEL', STATE, field)
    if field == 'wr' then WR = false else WS = false end
    return
  end
  local tokens = {}
  for i = 1, min(n, waiting, 64) do tokens[i] = '1' end
  rcall('LPUSH', list, spread(tokens))
  rcall('LTRIM', list, 0, waiting - 1)
end

local function wake_receivers(n)
  if WR == nil then WR = field('wr') end
  wake(WAKE, WAITING, 'wr', WR, n)
end

local function wake_senders(n)
  if WS == nil then WS = field('ws') end
  wake(ROOM, WANTING, 'ws', WS, n)
end

local function count_held(n)
  if n ~= 0 then
    HELD = rcall('HINCRBY', STATE, 'held', int_text(n))
    -- Closed and now drained: blocked receivers return Closed at once.
    if HELD == 0 and closed() then wake_receivers(64) end
  end
end

-- Something comes due at `at`: the first call after it looks.
local function due_at(at)
  if not DUE or at < DUE then
    DUE = at
    rcall('HSET', STATE, 'due', int_text(at))
  end
end

-- Caller `who` will block on `list`, and counts as waiting in `waiters`
-- until `field` says: the field only ever rises, so that it stays at or
-- past every waiter's time even if the server's clock steps back. With
-- nobody else waiting, tokens left over from earlier waiters are stale.
local function will_wait(list, waiters, field, who)
  rcall('ZREMRANGEBYSCORE', waiters, '-inf', NOW - 1)
  if rcall('ZCARD', waiters) == 0 then rcall('DEL', list) end
  local until_at = NOW + WAIT_MS
  rcall('ZADD', waiters, until_at, who)
  local current = rcall('HGET', STATE, field)
  if not current or current + 0 < until_at then
    rcall('HSET', STATE, field, int_text(until_at))
  end
end

-- Backoff::delay in milliseconds: the delay before attempt n + 1.
local function backoff(n)
  settings()
  if BACKOFF == 'none' then return 0 end
  if BACKOFF == 'fixed' then return BACKOFF_A end
  local doublings = min(max(n - 1, 0), 63)
  local full = min(BACKOFF_A * (2 ^ doublings), BACKOFF_B)
  if JITTER then
    local half = floor(full / 2)
    -- Seeded by the server clock's microseconds, stepped per message.
    -- MINSTD: the product stays under 2^53, so Lua's doubles keep it
    -- exact (a multiplier of 1103515245 did not).
    SALT = ((SALT or tonumber(USEC) + 1) * 48271) % 2147483647
    return half + SALT % (full - half + 1)
  end
  return full
end

-- A message that has left ready, delayed and in flight goes to the
-- dead-letter queue at `at`; `r` is its record.
local function bury(id, r, kind, text, at)
  local m = meta(r)
  m.dr, m.dt, m.da, m.x = kind, text, at, nil
  store(id, r)
  rcall('ZADD', DEAD, id, id)
  rcall('ZREM', EXPIRY, id)
  count('dead_lettered', 1)
  count_held(-1)
  wake_senders(1)
end

local function make_visible(id, at)
  if at <= NOW then
    rcall('RPUSH', READY, id)
    wake_receivers(1)
  else
    rcall('ZADD', DELAYED, at, id)
    due_at(at)
  end
end

-- After a failed attempt at `at` of the message whose record is `r`,
-- its lease over: dead-lettered if its receives are used up, otherwise
-- visible again after `delay` (nil: the backoff).
local function after_failure(id, r, at, delay)
  settings()
  r.tok = '-'
  if r.n >= (meta(r).m or MAX_RECEIVES) then
    bury(id, r, 'max', nil, at)
    return
  end
  store(id, r)
  make_visible(id, at + (delay or backoff(r.n)))
end

-- The earliest score in `key`; nil when it holds only the sentinel (or
-- nothing).
local function first_score(key)
  local first = rcall('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first > 0 and first[2] ~= 'inf' then return tonumber(first[2]) end
  return nil
end

-- Whatever time has made due, once it is due: delayed messages become
-- ready, expired leases count as failed attempts (as of their deadline),
-- messages never received whose time to live ran out are dead-lettered,
-- and idempotency keys past their window are forgotten.
local function reclaim()
  if not DUE or DUE > NOW then return end
  local ready = rcall('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, BATCH)
  if #ready > 0 then
    variadic('ZREM', DELAYED, ready)
    variadic('RPUSH', READY, ready)
    wake_receivers(#ready)
  end
  local gone = rcall('ZRANGEBYSCORE', LEASED, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  for i = 1, #gone, 2 do
    local id, at = gone[i], tonumber(gone[i + 1])
    rcall('ZREM', LEASED, id)
    count('expired', 1)
    local r = load(id)
    if r then after_failure(id, r, at, nil) end
  end
  -- Messages whose time to live ran out, and keys whose window did.
  local dying = rcall('ZRANGEBYSCORE', EXPIRY, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  local old = {}
  for i = 1, #dying, 2 do
    local id, at = dying[i], tonumber(dying[i + 1])
    if byte(id, 1) == 107 then
      old[#old + 1] = id
    else
      rcall('ZREM', EXPIRY, id)
      local r = load(id)
      if r and r.n == 0 then
        local found = rcall('LREM', READY, 1, id)
        if found == 0 then found = rcall('ZREM', DELAYED, id) end
        if found > 0 then bury(id, r, 'exp', nil, at) end
      end
    end
  end
  if #old > 0 then
    variadic('ZREM', EXPIRY, old)
    variadic('HDEL', DATA, old)
  end
  local next = nil
  for _, key in ipairs({DELAYED, LEASED, EXPIRY}) do
    local at = first_score(key)
    if at and (not next or at < next) then next = at end
  end
  DUE = next
  if next then rcall('HSET', STATE, 'due', next) else rcall('HDEL', STATE, 'due') end
end

-- The earliest time something comes due that a receive waits for (-1 if
-- nothing will; a key's window ending wakes it for nothing, rarely).
local function next_due()
  local best = -1
  for _, key in ipairs({DELAYED, LEASED, EXPIRY}) do
    local at = first_score(key)
    if at and (best < 0 or at < best) then best = at end
  end
  return best
end

local function forget(ids)
  if #ids > 0 then
    variadic('HDEL', DATA, ids)
    variadic('ZREM', EXPIRY, ids)
  end
end

-- Which of the ids in ARGV[first] on the lease `token` still holds, their
-- records, and the first id it does not hold (0 if none).
local function held_by(token, first)
  local mine, records, lost, seen, ids, count, m = {}, {}, 0, {}, {}, #ARGV - first + 1, 0
  if count <= 0 then return mine, records, lost end
  for i = 1, count do ids[i] = ARGV[first + i - 1] end
  local values = hmget(DATA, ids)
  for i = 1, count do
    local id, v = ids[i], values[i]
    if leased_with(v, token) and not seen[id] then
      seen[id] = true
      m = m + 1
      mine[m], records[m] = id, v
    elseif lost == 0 then
      lost = id
    end
  end
  return mine, records, lost
end

-- Messages as the client reads them: id and record, of each id that
-- still has a record.
local function described(ids)
  local out = {}
  if #ids == 0 then return out end
  local values = hmget(DATA, ids)
  for i, id in ipairs(ids) do
    if values[i] then
      out[#out + 1] = id
      out[#out + 1] = values[i]
    end
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

-- A blocking caller, as ARGV gives it: whether it waited since its last
-- call ('0'|'1'), whether it will wait if it must, then its name.
local function waited(caller) return byte(caller, 1) == 49 end
local function will(caller) return byte(caller, 2) == 49 end
local function name(caller) return sub(caller, 3) end

-- ARGV[A]: how many messages, all without options, or 'o' for one
-- message with options; A + 1: the caller; then each message's payload,
-- and for 'o' the options, separated by spaces: any payload is a
-- duplicate (0|1), delay (ms), visible at (ms, '' none), max_receives
-- ('' none), time to live (ms, '' none), payload fingerprint, and last
-- the key ('' none, else 'k' and the key, which may hold spaces). (An
-- argument costs the server about 1,000 instructions: a batch's messages
-- take one each.)
local function options(raw)
  local any, delay, at, max, ttl, fp, key =
    match(raw, '^([01]) (%d*) (%d*) (%d*) (%d*) (%d*) (.*)$')
  local keyed = key ~= ''
  return {any = any == '1', delay = tonumber(delay) or 0, at = tonumber(at),
    max = tonumber(max), ttl = tonumber(ttl), fp = fp,
    key = keyed and sub(key, 2) or nil}
end

-- No room for a send: a caller that will wait counts as waiting.
local function no_room(caller)
  if will(caller) then will_wait(ROOM, WANTING, 'ws', name(caller)) end
  return {'full'}
end

-- One message with options `o`, payload `payload`.
local function send_with(o, payload, caller)
  if o.key then
    local seen = rcall('HGET', DATA, 'k' .. o.key)
    if seen then
      settings()
      local sep = find(seen, ':', 1, true)
      local id, first_fp = sub(seen, 1, sep - 1), sub(seen, sep + 1)
      if o.any or KEY_ONLY or first_fp == o.fp then
        count('duplicates', 1)
        return {'dup', id}
      end
      return {'conflict', id}
    end
  end
  if held() + 1 > capacity() then return no_room(caller) end
  local id = int_text(rcall('HINCRBY', STATE, 'seq', '1'))
  settings()
  local m = {e = NOW}
  if o.key then
    m.k = o.key
    local key = 'k' .. o.key
    rcall('HSET', DATA, key, id .. ':' .. o.fp)
    rcall('ZADD', EXPIRY, NOW + DEDUP_MS, key)
    due_at(NOW + DEDUP_MS)
  end
  if o.max then m.m = o.max end
  if o.ttl then
    m.x = NOW + o.ttl
    rcall('ZADD', EXPIRY, m.x, id)
    due_at(m.x)
  end
  rcall('HSET', DATA, id, '0 - ' .. cjson.encode(m) .. '\n' .. payload)
  make_visible(id, o.at or NOW + o.delay)
  count_held(1)
  return {'ok', id}
end

function ops.send()
  local caller = ARGV[A + 1]
  if waited(caller) then rcall('ZREM', WANTING, name(caller)) end
  if closed() then return {'closed'} end
  reclaim()
  local count_text, first = ARGV[A], A + 2
  if count_text == 'o' then return send_with(options(ARGV[first + 1]), ARGV[first], caller) end
  if count_text == '1' then
    -- The common case, one message without options, in the fewest steps.
    local now_held = held() + 1
    if now_held > capacity() then return no_room(caller) end
    -- Both counters in one command (sending changes nothing a closed
    -- queue's receivers wait for).
    local id = int_text(SEQ and SEQ + 1 or 1)
    HELD = now_held
    rcall('HSET', STATE, 'seq', id, 'held', int_text(now_held))
    rcall('HSET', DATA, id, '0 - ' .. now_text() .. '\n' .. ARGV[first])
    rcall('RPUSH', READY, id)
    wake_receivers(1)
    return {'ok', id}
  end
  local n = tonumber(count_text)
  if held() + n > capacity() then return no_room(caller) end
  local base = rcall('HINCRBY', STATE, 'seq', count_text) - n
  local data, ready, head = {}, {}, '0 - ' .. now_text() .. '\n'
  -- The ids as strings: all but the last two digits change at most once
  -- per hundred ids, so most are a prefix and two digits (1,000
  -- instructions less each than `format`).
  local upper, above
  for i = 1, n do
    local v = base + i
    local low = v % 100
    local id
    if v < 100 then
      id = format('%d', v)
    else
      if low == 0 or not above then
        upper = (v - low) / 100
        above = format('%d', upper)
      end
      id = above .. TWO_DIGITS[low]
    end
    data[2 * i - 1], data[2 * i] = id, head .. ARGV[first + i - 1]
    ready[i] = id
  end
  variadic('HSET', DATA, data)
  variadic('RPUSH', READY, ready)
  wake_receivers(n)
  count_held(n)
  -- The ids are consecutive: the first and how many.
  return {'ok', base + 1, n}
end

-- The next lease token. Tokens start at the server's time in
-- microseconds, so that a state the server lost (a restart without
-- persistence) cannot hand out a token a stale delivery still holds:
-- fewer than one receive runs per microsecond.
local function next_token()
  local token = rcall('HINCRBY', STATE, 'tok', '1')
  if token == 1 then
    token = rcall('HINCRBY', STATE, 'tok', int_text(NOW * 1000 + tonumber(USEC) % 1000))
  end
  return token
end

-- Leases message `id`, just popped from ready, as `recv` does a batch.
-- Record `v` of a message leased with `token_text`: its receives one
-- more, and the token; then where its metadata starts in `v`.
local function leased(v, token_text)
  local a = find(v, ' ', 1, true)
  local b = find(v, ' ', a + 1, true)
  local count
  if a == 2 and byte(v, 1) == 48 then
    count = '1'
  else
    count = int_text(sub(v, 1, a - 1) + 1)
  end
  return count .. ' ' .. token_text .. ' ' .. sub(v, b + 1), b + 1
end

local function lease_one(id)
  local deadline = NOW + ARGV[A]
  local v = rcall('HGET', DATA, id)
  if not v then return nil end
  local token = next_token()
  local record, from = leased(v, int_text(token))
  rcall('HSET', DATA, id, record)
  -- A time to live only applies to a message never received.
  if lives(v, from) then rcall('ZREM', EXPIRY, id) end
  rcall('ZADD', LEASED, int_text(deadline), id)
  due_at(deadline)
  return {'ok', token, id, record}
end

-- ARGV[A]: visibility timeout (ms), A + 1: the most to take, A + 2: the
-- caller (see `waited`), who will wait if there is nothing. Returns
-- {'ok', token, then each message's id and record}, {'closed'}, or
-- {'empty', when something next comes due (-1 never), now}. (Two values
-- a message, not five: the client's parser spends about 2,000
-- instructions on each value. Not one, the id in the record: that cost
-- the server 1,900 instructions a message more in a batch cycle, for the
-- client's 2,000 less, and the server is the part every process shares.)
function ops.recv()
  local caller = ARGV[A + 2]
  if waited(caller) then rcall('ZREM', WAITING, name(caller)) end
  reclaim()
  local popped
  if ARGV[A + 1] == '1' then
    -- The common case, one message, without the lists a batch needs.
    local id = rcall('LPOP', READY)
    if id then
      local found = lease_one(id)
      if found then return found end
    end
  else
    popped = rcall('LPOP', READY, ARGV[A + 1])
  end
  if popped then
    -- Messages come and go only through these calls: every id popped has
    -- its record (one that had none would be skipped, not fail the call
    -- half done), and (reclaim having just run) none has outlived its
    -- time to live unless more than BATCH expired at once, in which case
    -- the rest are delivered rather than dead-lettered.
    local deadline = NOW + ARGV[A]
    local deadline_text = int_text(deadline)
    local values = hmget(DATA, popped)
    local token = next_token()
    local token_text = int_text(token)
    local out, set, leases, lived, l = {'ok', token}, {}, {}, {}, 0
    local k = 0
    for i, id in ipairs(popped) do
      local v = values[i]
      if v then
        k = k + 1
        local record, from = leased(v, token_text)
        out[2 * k + 1], out[2 * k + 2] = id, record
        set[2 * k - 1], set[2 * k] = id, record
        leases[2 * k - 1], leases[2 * k] = deadline_text, id
        -- A time to live only applies to a message never received.
        if lives(v, from) then
          l = l + 1
          lived[l] = id
        end
      end
    end
    if k == 0 then return {'empty', next_due(), NOW} end
    variadic('HSET', DATA, set)
    if l > 0 then variadic('ZREM', EXPIRY, lived) end
    variadic('ZADD', LEASED, leases)
    due_at(deadline)
    return out
  end
  if closed() and held() == 0 then return {'closed'} end
  if will(caller) then will_wait(WAKE, WAITING, 'wr', name(caller)) end
  return {'empty', next_due(), NOW}
end

-- ARGV[A]: token, then ids. Returns how many were acknowledged and the
-- first id whose lease was no longer held (0 if none).
function ops.ack()
  reclaim()
  if #ARGV == A + 1 then
    -- The common case, one message, without the lists a batch needs.
    local id = ARGV[A + 1]
    if not leased_with(rcall('HGET', DATA, id), ARGV[A]) then return {0, id} end
    rcall('ZREM', LEASED, id)
    rcall('HDEL', DATA, id)
    count_held(-1)
    wake_senders(1)
    return {1, 0}
  end
  local mine, _, lost = held_by(ARGV[A], A + 1)
  if #mine > 0 then
    variadic('ZREM', LEASED, mine)
    variadic('HDEL', DATA, mine)
    count_held(-#mine)
    wake_senders(#mine)
  end
  return {#mine, lost}
end

-- ARGV[A]: token, A + 1: delay (ms, '' the backoff), A + 2: has an error
-- text (0|1), A + 3: the text, then ids.
function ops.release()
  reclaim()
  local delay = tonumber(ARGV[A + 1])
  local has_error, text = ARGV[A + 2] == '1', ARGV[A + 3]
  local mine, records, lost = held_by(ARGV[A], A + 4)
  if #mine > 0 then variadic('ZREM', LEASED, mine) end
  for i, id in ipairs(mine) do
    local r = load(id, records[i])
    if has_error then
      local m = meta(r)
      m.err = m.err or {}
      m.err[#m.err + 1] = text
    end
    after_failure(id, r, NOW, delay)
  end
  count('nacked', #mine)
  return {#mine, lost}
end

-- ARGV[A]: token, then ids: a receive whose caller is gone (an async
-- receive dropped while its call ran) is undone: each message goes back
-- to the front of the ready queue with its receive count as it was.
function ops.unreceive()
  reclaim()
  local mine, records, lost = held_by(ARGV[A], A + 1)
  if #mine > 0 then variadic('ZREM', LEASED, mine) end
  for i = #mine, 1, -1 do
    local id = mine[i]
    local r = load(id, records[i])
    r.n, r.tok = max(r.n - 1, 0), '-'
    if r.n == 0 then
      -- Never received again: its time to live, which the receive took
      -- off, applies again.
      local x = meta(r).x
      if x then
        rcall('ZADD', EXPIRY, x, id)
        due_at(x)
      end
    end
    store(id, r)
    rcall('LPUSH', READY, id)
  end
  wake_receivers(#mine)
  return {#mine, lost}
end

-- ARGV[A]: token, A + 1: reason, then ids.
function ops.reject()
  reclaim()
  local mine, records, lost = held_by(ARGV[A], A + 2)
  if #mine > 0 then variadic('ZREM', LEASED, mine) end
  for i, id in ipairs(mine) do
    local r = load(id, records[i])
    r.tok = '-'
    bury(id, r, 'rej', ARGV[A + 1], NOW)
  end
  return {#mine, lost}
end

-- ARGV[A]: token, A + 1: by (ms), then ids. Returns the new deadline and
-- the first id whose lease was no longer held (0 if none).
function ops.extend()
  reclaim()
  local deadline = NOW + tonumber(ARGV[A + 1])
  local mine, _, lost = held_by(ARGV[A], A + 2)
  for _, id in ipairs(mine) do
    rcall('ZADD', LEASED, 'XX', deadline, id)
  end
  due_at(deadline)
  return {deadline, lost}
end

-- ARGV[A]: token, A + 1: id. The lease's deadline, or -1.
function ops.deadline()
  reclaim()
  if not leased_with(rcall('HGET', DATA, ARGV[A + 1]), ARGV[A]) then return -1 end
  return tonumber(rcall('ZSCORE', LEASED, ARGV[A + 1]))
end

-- ARGV[A]: 'wake' or 'room', A + 1: the caller, who stops waiting.
function ops.unwait()
  local waiters = WAITING
  if ARGV[A] == 'room' then waiters = WANTING end
  rcall('ZREM', waiters, ARGV[A + 1])
  return 1
end

function ops.stats()
  reclaim()
  local oldest = -1
  local head = rcall('LINDEX', READY, 0)
  if head then
    local r = load(head)
    if r then oldest = meta(r).e end
  end
  -- `sent` and `acked` are not counted on each send and ack (a command
  -- each): every message sent took an id, and every one that left held
  -- was acknowledged, dead-lettered or cancelled.
  local counters = rcall('HGETALL', STATE)
  local c = {}
  for i = 1, #counters, 2 do c[counters[i]] = tonumber(counters[i + 1]) or 0 end
  local function n(name) return c[name] or 0 end
  local sent = n('seq')
  local acked = sent + n('redriven') - n('dead_lettered') - n('cancelled') - n('held')
  counters[#counters + 1] = 'sent'
  counters[#counters + 1] = sent
  counters[#counters + 1] = 'acked'
  counters[#counters + 1] = acked
  return {rcall('LLEN', READY), rcall('ZCOUNT', DELAYED, '-inf', '(inf'),
    rcall('ZCOUNT', LEASED, '-inf', '(inf'),
    rcall('ZCARD', DEAD), oldest, NOW, closed() and 1 or 0, counters}
end

-- At open: a field and members longer than Redis's listpack settings
-- allow (64 bytes by default), so that the data hash and the delayed and
-- leased sets keep their hash-table and skiplist encodings for good.
-- While a key is a listpack (up to 128 entries), each lookup or insert
-- scans it: receiving and acknowledging batches of 64 small messages
-- cost three times as much. The sentinel member's score, +inf, keeps it
-- out of every range of due times.
function ops.init()
  local sentinel = rep('~', 1100)
  rcall('HSETNX', DATA, '~', sentinel)
  rcall('ZADD', DELAYED, 'NX', 'inf', sentinel)
  rcall('ZADD', LEASED, 'NX', 'inf', sentinel)
  return 1
end

function ops.close()
  rcall('HSET', STATE, 'closed', '1')
  wake_receivers(64)
  wake_senders(64)
  return 1
end

-- ARGV[A]: how many: wakes that many blocked receivers (a worker pool
-- stopping).
function ops.wake()
  wake_receivers(tonumber(ARGV[A]))
  return 1
end

-- ARGV[A]: the most to show.
function ops.peek()
  reclaim()
  return described(rcall('LRANGE', READY, 0, tonumber(ARGV[A]) - 1))
end

-- ARGV[A]: an id, or '' for all: the ids of those dead letters.
local function letter_ids()
  if ARGV[A] == '' then return rcall('ZRANGE', DEAD, 0, -1) end
  if rcall('ZSCORE', DEAD, ARGV[A]) then return {ARGV[A]} end
  return {}
end

-- ARGV[A]: an id, or '' for all: dead letters, described.
function ops.letters()
  reclaim()
  return described(letter_ids())
end

-- ARGV[A]: replace the payload (0|1), A + 1: the payload, then ids, in
-- order, or '*' for every dead letter. Returns {'ok', moved} or {'full',
-- moved} or {'missing', id} (for a single id only; several skip the ones
-- gone meanwhile).
function ops.redrive()
  if closed() then return {'closed', 0} end
  reclaim()
  local fixed, payload = ARGV[A] == '1', ARGV[A + 1]
  local ids
  if ARGV[A + 2] == '*' then
    ids = rcall('ZRANGE', DEAD, 0, -1)
  else
    ids = ids_from(A + 2)
  end
  local single = #ARGV == A + 2 and ARGV[A + 2] ~= '*'
  local moved = 0
  for _, id in ipairs(ids) do
    -- (A dead letter without its record, which nothing makes, is
    -- skipped rather than failing the call half done.)
    local r = rcall('ZSCORE', DEAD, id) and load(id)
    if r then
      if held() + 1 > capacity() then
        count('redriven', moved)
        return {'full', moved}
      end
      rcall('ZREM', DEAD, id)
      local m = meta(r)
      m.err, m.dr, m.dt, m.da, m.x = nil, nil, nil, nil, nil
      r.n, r.tok = 0, '-'
      if fixed then r.p = payload end
      store(id, r)
      rcall('RPUSH', READY, id)
      count_held(1)
      wake_receivers(1)
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
  reclaim()
  local ids = letter_ids()
  local out = described(ids)
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
    local seen = rcall('HGET', DATA, 'k' .. id)
    if not seen then return {'unknown'} end
    id = sub(seen, 1, find(seen, ':', 1, true) - 1)
  end
  local where = 'ready'
  if rcall('LREM', READY, 1, id) == 0 then
    where = 'delayed'
    if rcall('ZREM', DELAYED, id) == 0 then return {'missing', id} end
  end
  forget({id})
  count_held(-1)
  count('cancelled', 1)
  wake_senders(1)
  return {where, id}
end

-- Each operation is a function of its own, so that its name is not an
-- argument (1,300 instructions on every call). (No `pairs` while the
-- library loads: the names are listed.)
local NAMES = {'send', 'recv', 'ack', 'release', 'unreceive', 'reject', 'extend',
  'deadline', 'unwait', 'stats', 'init', 'close', 'wake', 'peek', 'letters', 'redrive',
  'remove', 'cancel'}
for i = 1, #NAMES do
  local name = NAMES[i]
  local op = ops[name]
  local function run(keys, args)
    if not rcall then bind() end
    setup(name, keys, args)
    return op()
  end
  -- Sends are refused before they start when the server is at maxmemory
  -- (a typed error, nothing half done). Everything else may run past
  -- it: receives and settlements free memory or hold it steady, and a
  -- queue that cannot be acknowledged at maxmemory would never drain.
  local flags = {'allow-oom'}
  if name == 'send' then flags = {} end
  redis.register_function{function_name = 'SPOOL_LIBRARY_' .. name, callback = run, flags = flags}
end
