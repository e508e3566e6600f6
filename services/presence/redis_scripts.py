r"""Lua scripts of the Redis presence store. Redis runs each script atomically.

Keys of tenant T carry the hash tag ``{T}``, so all of them map to one cluster slot:

* ``prim:{T}:rec:<conn_id>``: the serialized ``User`` record, with the entry's TTL.
* ``prim:{T}:meta``: hash conn_id -> ``user_id\0platform\0node_id\0login_time\0ttl_ms``.
* ``prim:{T}:order``: sorted set, score 0, members ``user_id\0platform\0conn_id``.
  Their lexicographic order is the order of ListConnections. The members of one
  user are the range ``[user_id\0`` to ``(user_id\1``.
* ``prim:{T}:expiry``: sorted set conn_id -> expiry in ms (Redis server time).
* ``prim:{T}:gone:<conn_id>``: tombstone of a removed connection, with its last TTL.

Keys shared by all tenants, whose members carry the tenant:

* ``prim:expiry``: sorted set ``T\0conn_id`` -> expiry in ms, read by the sweeper.
* ``prim:node:{N}:conns``: set of ``T\0conn_id`` recorded on edge node N.
* ``prim:node:{N}``: hash with the node's ``record`` (a serialized ``Node``) and ``ttl_ms``.
* ``prim:nodes``: sorted set node_id -> expiry in ms.

Every script that adds, moves or removes a user's connection publishes
``T\0user_id`` on the channel ``prim:presence:changes`` (see
:data:`CHANGES_CHANNEL`), so that routers can cache what LOCATE returns and
drop an entry when it changes. A refresh that only extends a live entry
publishes nothing. An entry that expires unseen is bounded by the ms left that
LOCATE returns with it.

Ids never contain a NUL byte (they are checked against ``[A-Za-z0-9._@-]``), so
NUL separates fields. Times come from Redis ``TIME``, the clock that expires keys.

NOTE: the scripts build key names from their arguments, and most of them touch a
tenant's keys together with the shared keys above. That is atomic on one Redis
server but would fail across slots on Redis Cluster.
"""

from __future__ import annotations

CHANGES_CHANNEL = "prim:presence:changes"

_HELPERS = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function split(s)
  local parts, start = {}, 1
  while true do
    local i = string.find(s, '\0', start, true)
    if not i then
      parts[#parts + 1] = string.sub(s, start)
      return parts
    end
    parts[#parts + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- Byte order, because Lua's '<' follows the server's LC_COLLATE.
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local function prefix(tenant) return 'prim:{' .. tenant .. '}:' end

-- Tell the routers that cache locations that this user's connections changed.
local function changed(tenant, user)
  redis.call('PUBLISH', '@CHANNEL@', tenant .. '\0' .. user)
end
local function node_conns(node) return 'prim:node:{' .. node .. '}:conns' end
local function node_key(node) return 'prim:node:{' .. node .. '}' end

local function expiry_of(p, conn)
  return tonumber(redis.call('ZSCORE', p .. 'expiry', conn) or 0)
end

-- Members of the order index that belong to one user.
local function user_members(p, user)
  return redis.call('ZRANGEBYLEX', p .. 'order', '[' .. user .. '\0', '(' .. user .. '\1')
end

-- Remove a connection from every structure. Returns its meta fields, or nil if unknown.
local function remove_conn(tenant, conn, tombstone)
  local p = prefix(tenant)
  local member = tenant .. '\0' .. conn
  redis.call('ZREM', p .. 'expiry', conn)
  redis.call('ZREM', 'prim:expiry', member)
  redis.call('DEL', p .. 'rec:' .. conn)
  local meta = redis.call('HGET', p .. 'meta', conn)
  if not meta then return nil end
  local f = split(meta)
  changed(tenant, f[1])
  redis.call('HDEL', p .. 'meta', conn)
  redis.call('ZREM', p .. 'order', f[1] .. '\0' .. f[2] .. '\0' .. conn)
  redis.call('SREM', node_conns(f[3]), member)
  if tombstone then redis.call('SET', p .. 'gone:' .. conn, '1', 'PX', f[5]) end
  return f
end

local function upsert(tenant, conn, user, platform, node, login, ttl, record, now)
  local p = prefix(tenant)
  local member = tenant .. '\0' .. conn
  local old = redis.call('HGET', p .. 'meta', conn)
  if old then
    local f = split(old)
    if f[1] ~= user or f[2] ~= platform then
      redis.call('ZREM', p .. 'order', f[1] .. '\0' .. f[2] .. '\0' .. conn)
    end
    if f[3] ~= node then redis.call('SREM', node_conns(f[3]), member) end
    if f[1] ~= user then changed(tenant, f[1]) end
    -- LOCATE skips an expired entry, so bringing one back is a change too.
    if f[1] ~= user or f[2] ~= platform or f[3] ~= node or expiry_of(p, conn) <= now then
      changed(tenant, user)
    end
  else
    changed(tenant, user)
  end
  local expires = now + ttl
  local meta = table.concat({user, platform, node, login, tostring(ttl)}, '\0')
  redis.call('HSET', p .. 'meta', conn, meta)
  redis.call('ZADD', p .. 'order', 0, user .. '\0' .. platform .. '\0' .. conn)
  redis.call('ZADD', p .. 'expiry', expires, conn)
  redis.call('ZADD', 'prim:expiry', expires, member)
  redis.call('SADD', node_conns(node), member)
  redis.call('SET', p .. 'rec:' .. conn, record, 'PX', ttl)
end

-- Remove every expired connection of one tenant, so indexes count only live ones.
local function sweep_tenant(tenant, now)
  local p = prefix(tenant)
  for _, conn in ipairs(redis.call('ZRANGEBYSCORE', p .. 'expiry', '-inf', now)) do
    remove_conn(tenant, conn, false)
  end
end
""".replace("@CHANNEL@", CHANGES_CHANNEL)

# KEYS[1]: prim:{T}:order. ARGV: tenant, user_id, platform, node_id, conn_id, login_time,
# ttl_ms, record, policy, max_devices. Returns platform, node_id, conn_id per replaced one.
CONNECT = _HELPERS + r"""
local tenant, user, platform, node, conn = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ttl, record, policy = tonumber(ARGV[7]), ARGV[8], ARGV[9]
local max_devices = tonumber(ARGV[10])
local now = now_ms()
local p = prefix(tenant)
redis.call('DEL', p .. 'gone:' .. conn)
upsert(tenant, conn, user, platform, node, ARGV[6], ttl, record, now)

local others = {}
for _, member in ipairs(user_members(p, user)) do
  local f = split(member)
  local other = f[3]
  if other ~= conn then
    local meta = redis.call('HGET', p .. 'meta', other)
    if not meta or expiry_of(p, other) <= now then
      redis.call('ZREM', p .. 'order', member)
      remove_conn(tenant, other, false)
    else
      local m = split(meta)
      others[#others + 1] = {conn = other, platform = f[2], node = m[3], login = tonumber(m[4])}
    end
  end
end

local replaced = {}
if policy == 'single' then
  replaced = others
elseif policy == 'multi' then
  table.sort(others, function(a, b)
    if a.login ~= b.login then return a.login < b.login end
    return bytes_less(a.conn, b.conn)
  end)
  for i = 1, #others - (max_devices - 1) do replaced[#replaced + 1] = others[i] end
else
  for _, o in ipairs(others) do
    if o.platform == platform then replaced[#replaced + 1] = o end
  end
end

local reply = {}
for _, o in ipairs(replaced) do
  remove_conn(tenant, o.conn, true)
  reply[#reply + 1] = o.platform
  reply[#reply + 1] = o.node
  reply[#reply + 1] = o.conn
end
return reply
"""

# KEYS[1]: prim:{T}:meta. ARGV: tenant, user_id, conn_id. Returns 1 if a live entry was removed.
DISCONNECT = _HELPERS + r"""
local tenant, user, conn = ARGV[1], ARGV[2], ARGV[3]
local p = prefix(tenant)
local meta = redis.call('HGET', p .. 'meta', conn)
if not meta or split(meta)[1] ~= user then return 0 end
local live = expiry_of(p, conn) > now_ms()
remove_conn(tenant, conn, true)
if live then return 1 end
return 0
"""

# KEYS[1]: prim:{T}:meta. ARGV: tenant, node_id, ttl_ms, then per connection: user_id,
# platform, conn_id, login_time, record. Skips tombstoned connections and returns the count written.
REFRESH = _HELPERS + r"""
local tenant, node, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local p = prefix(tenant)
local now = now_ms()
local written = 0
for i = 4, #ARGV, 5 do
  local conn = ARGV[i + 2]
  if redis.call('EXISTS', p .. 'gone:' .. conn) == 0 then
    upsert(tenant, conn, ARGV[i], ARGV[i + 1], node, ARGV[i + 3], ttl, ARGV[i + 4], now)
    written = written + 1
  end
end
return written
"""

# KEYS[1]: prim:{T}:order. ARGV: tenant, user ids. Returns user_id, platform, node_id, conn_id
# and the ms left before it expires, per live connection.
LOCATE = _HELPERS + r"""
local tenant = ARGV[1]
local p = prefix(tenant)
local now = now_ms()
local reply = {}
for i = 2, #ARGV do
  for _, member in ipairs(user_members(p, ARGV[i])) do
    local f = split(member)
    local meta = redis.call('HGET', p .. 'meta', f[3])
    local left = expiry_of(p, f[3]) - now
    if meta and left > 0 then
      reply[#reply + 1] = f[1]
      reply[#reply + 1] = f[2]
      reply[#reply + 1] = split(meta)[3]
      reply[#reply + 1] = f[3]
      reply[#reply + 1] = left
    end
  end
end
return reply
"""

# KEYS[1]: prim:{T}:order. ARGV: tenant, offset, limit, user_id or "". Returns the total,
# then the records of the page.
LIST_CONNECTIONS = _HELPERS + r"""
local tenant, offset, limit, user = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local p = prefix(tenant)
sweep_tenant(tenant, now_ms())
local total, members
if user == '' then
  total = redis.call('ZCARD', p .. 'order')
  members = redis.call('ZRANGE', p .. 'order', offset, offset + limit - 1)
else
  local low, high = '[' .. user .. '\0', '(' .. user .. '\1'
  total = redis.call('ZLEXCOUNT', p .. 'order', low, high)
  members = redis.call('ZRANGEBYLEX', p .. 'order', low, high, 'LIMIT', offset, limit)
end
local reply = {total}
for _, member in ipairs(members) do
  local record = redis.call('GET', p .. 'rec:' .. split(member)[3])
  if record then reply[#reply + 1] = record end
end
return reply
"""

# KEYS[1]: prim:{T}:order. ARGV: tenant. Returns the records of every live connection.
NODE_MAP = _HELPERS + r"""
local tenant = ARGV[1]
local p = prefix(tenant)
sweep_tenant(tenant, now_ms())
local reply = {}
for _, member in ipairs(redis.call('ZRANGE', p .. 'order', 0, -1)) do
  local record = redis.call('GET', p .. 'rec:' .. split(member)[3])
  if record then reply[#reply + 1] = record end
end
return reply
"""

# KEYS[1]: prim:nodes. ARGV: node_id, record, ttl_ms.
REGISTER_NODE = _HELPERS + r"""
local node, ttl = ARGV[1], tonumber(ARGV[3])
redis.call('HSET', node_key(node), 'record', ARGV[2], 'ttl_ms', ttl)
redis.call('PEXPIRE', node_key(node), ttl)
redis.call('ZADD', 'prim:nodes', now_ms() + ttl, node)
return 1
"""

# KEYS[1]: prim:nodes. ARGV: node_id. Extends a live registration by its own TTL.
REFRESH_NODE = _HELPERS + r"""
local node = ARGV[1]
local now = now_ms()
local ttl = tonumber(redis.call('HGET', node_key(node), 'ttl_ms') or 0)
local expires = tonumber(redis.call('ZSCORE', 'prim:nodes', node) or 0)
if ttl == 0 or expires <= now then return 0 end
redis.call('PEXPIRE', node_key(node), ttl)
redis.call('ZADD', 'prim:nodes', now + ttl, node)
return 1
"""

# KEYS[1]: prim:nodes. Returns the records of the live nodes.
LIST_NODES = _HELPERS + r"""
local reply = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', 'prim:nodes', '(' .. now_ms(), '+inf')) do
  local record = redis.call('HGET', node_key(node), 'record')
  if record then reply[#reply + 1] = record end
end
return reply
"""

# KEYS[1]: prim:nodes. ARGV: node_id, batch size. Removes the registration and up to a batch
# of the node's connections. Returns {members taken, live connections removed}.
DRAIN_NODE = _HELPERS + r"""
local node, batch = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
redis.call('ZREM', 'prim:nodes', node)
redis.call('DEL', node_key(node))
local members = redis.call('SPOP', node_conns(node), batch)
local removed = 0
for _, member in ipairs(members) do
  local f = split(member)
  local tenant, conn = f[1], f[2]
  local p = prefix(tenant)
  local meta = redis.call('HGET', p .. 'meta', conn)
  if meta and split(meta)[3] == node then
    if expiry_of(p, conn) > now then removed = removed + 1 end
    remove_conn(tenant, conn, true)
  end
end
return {#members, removed}
"""

# KEYS[1]: prim:expiry. ARGV: batch size. Removes up to a batch of expired connections, and
# expired nodes. Returns {members taken, connections removed}.
SWEEP = _HELPERS + r"""
local batch = tonumber(ARGV[1])
local now = now_ms()
local members = redis.call('ZRANGEBYSCORE', 'prim:expiry', '-inf', now, 'LIMIT', 0, batch)
local removed = 0
for _, member in ipairs(members) do
  local f = split(member)
  local tenant, conn = f[1], f[2]
  -- The tenant's own expiry decides, and remove_conn also drops the shared member.
  local expires = expiry_of(prefix(tenant), conn)
  if expires <= now then
    if remove_conn(tenant, conn, false) then removed = removed + 1 end
  else
    redis.call('ZADD', 'prim:expiry', expires, member)
  end
end
for _, node in ipairs(redis.call('ZRANGEBYSCORE', 'prim:nodes', '-inf', now, 'LIMIT', 0, batch)) do
  redis.call('ZREM', 'prim:nodes', node)
  redis.call('DEL', node_key(node))
end
return {#members, removed}
"""
