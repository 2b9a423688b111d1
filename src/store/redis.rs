//! The Redis store, through the redis crate's connection manager, which
//! multiplexes commands over one connection and reconnects by itself.
//!
//! The manager is created lazily so that a Redis that is down at start does
//! not stop tether from serving: the first ping only decides what is logged.
//! Every pipeline touches the keys of one hash tag (see `keys.rs`), so the
//! same commands work on Redis Cluster.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use redis::TlsCertificates;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use std::sync::Arc;

use super::recently::Recently;
use super::redis_conn::{LazyCluster, Nodes, RedisConn};
use super::redis_sentinel::SentinelMaster;
use crate::config::SentinelSettings;

use super::keys::{Key, all_sessions_member};
use super::{
    MessageRange, Messages, Retention, Scope, SessionEntry, SessionInfo, SessionPage, Store,
    StoreError, StoreHealth, StoreKind, Turn, UsageTotals, now_ms,
};
use crate::session::SessionId;
use crate::tenant::Tenant;

/// Appends turns, each atomically and in order: one script call for a
/// whole batch on a standalone server (a call's own cost, about 16,000
/// instructions of redis-server beyond its turns' work, is then paid once a
/// batch rather than once a turn: `bench/redis/turn_cost.py --instructions`),
/// one per turn on a cluster or a sharding proxy, where a script's keys
/// must share a slot (each turn's keys do).
/// A retry of a turn already applied (its answer was lost) changes nothing:
/// the session remembers the ids of the last 16 turns it took (a retried
/// batch may hold several turns of one session), as `,id,id,` cut to the
/// length of 16 of tether's ids, so that one plain search finds an id and
/// the oldest goes without counting. The session's
/// first messages (`Turn::if_new`) go in only when it has none yet: with
/// the others when it is new (no `created_ms`: a stream's opening may have
/// made the hash before any turn), or in front of them when its meta
/// outlived its messages (a stream's opening refreshed the meta's TTL, and
/// the turn that would have refreshed the list's was lost), which the length
/// RPUSH returns tells at no extra command in the usual case.
/// Five commands a turn (HMGET, RPUSH, EXPIRE, HSET, EXPIRE), three when
/// the session's TTLs were refreshed less than `ttl_refresh_ms` ago (its
/// `ttl_ms`): every one costs Redis CPU on the machine tether runs beside
/// (about 11,000 instructions from a script), so the usage sums are
/// computed here rather than with one HINCRBY each. The Lua around them is kept to what
/// costs little: no string counting, no table of fields, no number
/// conversion that a term's absence makes needless.
///
/// KEYS: each turn's messages and meta. ARGV: the TTL (s), the time now
/// and the time before which a refresh is stale (ms), then for each turn
/// its time, prompt, completion and total tokens, model, id, how many of
/// its messages are the session's first ones, how many messages it has,
/// and those messages.
static APPEND_TURNS: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        local ttl, now, refreshed_before = ARGV[1], ARGV[2], ARGV[3]
        -- The replay guard's memory: 16 ids of tether's 32 characters, each
        -- after a comma, and the last comma.
        local RECENT_BYTES = 16 * 33 + 1
        -- A usage sum, converted to and from a number only when both
        -- terms are there (each conversion costs Redis about 1,000
        -- instructions).
        local function sum(before, added)
            if not before then return added end
            if added == '0' then return before end
            return tonumber(before) + tonumber(added)
        end
        -- The meta's fields every turn writes, then `...`: straight into
        -- one call (a table of fields and unpack cost a new session's turn
        -- about 5,000 instructions).
        local function set_meta(meta_key, at, recent, prompt, completion, total, ...)
            redis.call('HSET', meta_key, 'last_message_ms', at, 'recent_turns', recent,
                'prompt_tokens', prompt, 'completion_tokens', completion,
                'total_tokens', total, ...)
        end
        local function append(messages_key, meta_key, at_arg, count)
            local at, model, id = ARGV[at_arg], ARGV[at_arg + 4], ARGV[at_arg + 5]
            local from_arg = at_arg + 8
            local to_arg = from_arg + count - 1
            local model_field = 'created_ms'
            if model ~= '' then model_field = 'model:' .. model end
            local meta = redis.call('HMGET', meta_key, 'recent_turns', 'created_ms',
                'prompt_tokens', 'completion_tokens', 'total_tokens', model_field, 'ttl_ms')
            local known = meta[2]
            -- The TTLs were refreshed long enough ago (or never, or by a
            -- clock ahead of this one): refreshed now. A new model's turn,
            -- rare, refreshes them too. A session's creation is its first
            -- refresh (one field less to write into a new hash costs Redis
            -- 2,000 instructions). Times are 13-digit milliseconds, so
            -- compared as text (tonumber costs ten times as much).
            local refreshed = meta[7] or known
            local refresh = not refreshed or refreshed <= refreshed_before or refreshed > now
                or not known or (model ~= '' and not meta[6])
            -- ',id,id,': an id is found with one search, whatever its place.
            local recent = meta[1]
            if recent and string.byte(recent) ~= 44 then
                recent = ',' .. recent .. ','  -- as written before 2026-12-07
            end
            if id ~= '' then
                if recent then
                    if string.find(recent, ',' .. id .. ',', 1, true) then
                        return
                    end
                    recent = recent .. id .. ','
                    if #recent > RECENT_BYTES then
                        local cut = string.find(recent, ',', #recent - RECENT_BYTES + 1, true)
                        recent = string.sub(recent, cut)
                    end
                else
                    recent = ',' .. id .. ','
                end
            end
            recent = recent or ''
            local head = 0
            if known then
                head = tonumber(ARGV[at_arg + 6])
            end
            local pushed, length = 0, 0
            for from = from_arg + head, to_arg, 1000 do
                local to = math.min(from + 999, to_arg)
                length = redis.call('RPUSH', messages_key, unpack(ARGV, from, to))
                pushed = pushed + to - from + 1
            end
            if head > 0 then
                if pushed == 0 then
                    length = redis.call('LLEN', messages_key)
                end
                if length == pushed then
                    -- Known (its meta lives on: a stream's opening refreshed it)
                    -- but without messages (they expired): its first ones go first.
                    local front = {}
                    for i = from_arg + head - 1, from_arg, -1 do
                        front[#front + 1] = ARGV[i]
                    end
                    redis.call('LPUSH', messages_key, unpack(front))
                end
            end
            if refresh or length == pushed then
                -- (the push made the list: it has no TTL yet)
                redis.call('EXPIRE', messages_key, ttl)
            end
            local prompt = sum(meta[3], ARGV[at_arg + 1])
            local completion = sum(meta[4], ARGV[at_arg + 2])
            local total = sum(meta[5], ARGV[at_arg + 3])
            if not refresh then
                set_meta(meta_key, at, recent, prompt, completion, total)
                return
            end
            if not known and model ~= '' then
                set_meta(meta_key, at, recent, prompt, completion, total,
                    'created_ms', at, model_field, at)
            elseif not known then
                set_meta(meta_key, at, recent, prompt, completion, total, 'created_ms', at)
            elseif model ~= '' and not meta[6] then
                set_meta(meta_key, at, recent, prompt, completion, total,
                    'ttl_ms', now, model_field, at)
            else
                set_meta(meta_key, at, recent, prompt, completion, total, 'ttl_ms', now)
            end
            redis.call('EXPIRE', meta_key, ttl)
        end
        local at_arg = 4
        for turn = 1, #KEYS / 2 do
            local count = tonumber(ARGV[at_arg + 7])
            append(KEYS[2 * turn - 1], KEYS[2 * turn], at_arg, count)
            at_arg = at_arg + 8 + count
        end
        return #KEYS / 2
        ",
    )
});

/// The longest a session's TTLs go unrefreshed while it is written to.
const TTL_REFRESH_MAX_MS: u64 = 60_000;

/// Arguments of one call of the turn script at most (a batch with more is
/// split), however many messages its turns hold.
const MAX_CALL_ARGS: usize = 100_000;

/// Members a ZSCAN call looks at: the admin's lookup of a session by id
/// alone reads the whole index of all tenants' sessions.
const SCAN_COUNT: usize = 1000;

/// How often at most a session index is pruned and its TTL refreshed.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Indexes remembered for `PRUNE_INTERVAL` (one per tenant, plus the admin's);
/// past this many the memory is dropped, and the next writes prune again.
const MAX_PRUNE_ENTRIES: usize = 100_000;

/// Sessions remembered as listed (see [`RedisStore::listed_lately`]); past
/// this many the memory is dropped, and the next stream's start lists its
/// session again. 100,000 sessions take about 10 MB.
const MAX_LISTED_SESSIONS: usize = 100_000;

pub struct RedisStore {
    pub(super) conn: RedisConn,
    /// Indexes this replica pruned lately.
    pruned: Recently,
    /// Sessions this replica listed at a stream's start lately, by their
    /// [`all_sessions_member`]: the next stream's start need not list them
    /// again.
    listed: Recently,
    /// Where connections of their own go (blocking reads of live tails,
    /// the control subscription).
    pub(super) nodes: Nodes,
    command_timeout: Duration,
    retention: Retention,
    /// A batch's turns go in one script call (see [`APPEND_TURNS`]) until
    /// the server refuses keys of several slots in one call.
    one_call_per_batch: std::sync::atomic::AtomicBool,
    /// Whether the server takes `ZADD GT` (Redis 6.2 and later), learnt
    /// from its version once it answers.
    zadd_gt: std::sync::OnceLock<bool>,
}

impl RedisStore {
    fn new(
        conn: RedisConn,
        nodes: Nodes,
        command_timeout: Duration,
        retention: Retention,
    ) -> RedisStore {
        RedisStore {
            conn,
            nodes,
            pruned: Recently::new(MAX_PRUNE_ENTRIES),
            listed: Recently::new(MAX_LISTED_SESSIONS),
            command_timeout,
            retention,
            one_call_per_batch: std::sync::atomic::AtomicBool::new(true),
            zadd_gt: std::sync::OnceLock::new(),
        }
    }

    /// Sets up the connection and pings once; a failed ping is logged, not returned.
    pub async fn connect(
        url: &str,
        tls: Option<TlsCertificates>,
        connect_timeout: Duration,
        command_timeout: Duration,
        retention: Retention,
    ) -> Result<Self, StoreError> {
        let client = open_client(url, tls.as_ref())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(command_timeout))
            // Reconnects back off up to a second, so a dead Redis is retried
            // often enough to notice its return and rarely enough to cost nothing.
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let store = RedisStore::new(
            RedisConn::Single(conn),
            Nodes::Standalone(Box::new(client)),
            command_timeout,
            retention,
        );
        store.first_ping(&redacted(url)).await;
        Ok(store)
    }

    /// The same over a Redis Cluster, given some of its nodes.
    pub async fn connect_cluster(
        nodes: &[String],
        tls: Option<TlsCertificates>,
        connect_timeout: Duration,
        command_timeout: Duration,
        retention: Retention,
    ) -> Result<Self, StoreError> {
        let mut builder = ClusterClient::builder(nodes.to_vec());
        if let Some(certs) = tls.clone().filter(|_| nodes.iter().any(|n| is_tls(n))) {
            builder = builder.certs(certs);
        }
        let cluster = builder
            .connection_timeout(connect_timeout)
            .response_timeout(command_timeout)
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .build()?;
        let clients = nodes
            .iter()
            .map(|n| open_client(n, tls.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err(StoreError::Corrupt("no cluster node".into()));
        }
        let store = RedisStore::new(
            RedisConn::Cluster(Arc::new(LazyCluster::new(cluster))),
            Nodes::Cluster(clients),
            command_timeout,
            retention,
        );
        let shown: Vec<String> = nodes.iter().map(|n| redacted(n)).collect();
        store.first_ping(&shown.join(",")).await;
        Ok(store)
    }

    /// The same with the master that Redis Sentinels name.
    pub async fn connect_sentinel(
        settings: &SentinelSettings,
        connect_timeout: Duration,
        command_timeout: Duration,
        retention: Retention,
    ) -> Result<Self, StoreError> {
        let master = Arc::new(SentinelMaster::new(
            settings,
            connect_timeout,
            command_timeout,
        )?);
        let store = RedisStore::new(
            RedisConn::Sentinel(master.clone()),
            Nodes::Sentinel(master),
            command_timeout,
            retention,
        );
        let shown = format!(
            "sentinel {} master {}",
            settings.sentinels.join(","),
            settings.master
        );
        store.first_ping(&shown).await;
        Ok(store)
    }

    async fn first_ping(&self, shown: &str) {
        match self.ping().await {
            Ok(()) => tracing::info!(redis = %shown, gt = self.gt(), "redis answered"),
            Err(e) => tracing::warn!(
                redis = %shown, error = %e,
                "redis does not answer; serving anyway and retrying in the background"
            ),
        }
    }

    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.conn, RedisConn::Cluster(_))
    }

    /// Runs one command or pipeline under the command timeout.
    pub(super) async fn timed<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.command_timeout, fut).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => {
                self.conn.timed_out();
                Err(StoreError::Timeout(self.command_timeout))
            }
        }
    }

    /// PING, or until the server's version is known, `INFO server`, which
    /// tells whether it takes `ZADD GT`.
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        if self.zadd_gt.get().is_some() {
            let cmd = redis::cmd("PING");
            return self
                .timed(cmd.query_async::<String>(&mut conn))
                .await
                .map(drop);
        }
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server");
        // A cluster answers with each master's text in a map.
        let info: redis::Value = self.timed(cmd.query_async(&mut conn)).await?;
        let mut text = String::new();
        collect_text(&info, &mut text);
        let _ = self.zadd_gt.set(takes_zadd_gt(&text));
        Ok(())
    }

    /// Learns the server's version if it is not known yet (Redis was down
    /// at start and no health check has reached it since): one round trip,
    /// once. A failure leaves it for the next write.
    pub(super) async fn learn_version(&self) {
        if self.zadd_gt.get().is_none() {
            let _ = self.ping().await;
        }
    }

    /// Whether index writes use `ZADD GT`: a session's score then never
    /// goes back, even when a write is carried out after a later one (a
    /// stream's opening retried after its turn went in).
    fn gt(&self) -> bool {
        self.zadd_gt.get() == Some(&true)
    }

    fn ttl_secs(&self) -> i64 {
        self.retention.history_ttl.as_secs() as i64
    }

    /// How long after a session's TTLs were refreshed a turn refreshes them
    /// again: a hundredth of the TTL, a minute at most. Two EXPIREs are two
    /// of a turn's five commands, and a chat or an agent writes its turns
    /// seconds apart; history then outlives its last write by the TTL less
    /// at most this.
    fn ttl_refresh_ms(&self) -> u64 {
        (self.retention.history_ttl.as_millis() as u64 / 100).min(TTL_REFRESH_MAX_MS)
    }

    /// Index entries older than this have no history left.
    fn cutoff_ms(&self) -> u64 {
        now_ms().saturating_sub(self.retention.history_ttl.as_millis() as u64)
    }

    /// Adds or refreshes the session in its tenant's index and the admin's,
    /// a round trip each: on a cluster each index has a slot of its own.
    pub(super) async fn index_session(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        for (key, member) in index_entries(tenant, session) {
            let mut conn = self.conn.clone();
            let mut pipe = redis::pipe();
            self.add_to_index(&mut pipe, &key.to_redis(), &[(at_ms, member.as_str())]);
            self.timed(pipe.query_async::<()>(&mut conn)).await?;
        }
        Ok(())
    }

    /// Whether this replica listed the session at a stream's start lately:
    /// within the time a turn leaves a session's TTLs alone (a minute at
    /// most), so its index entries cannot have been pruned since. The next
    /// stream's start then leaves the indexes alone: the session is listed
    /// already, and its score (last activity) moves when the stream's turn
    /// is written. A session cleared since, on another replica, is listed
    /// again once that turn is written. Turns are not noted: remembering
    /// every session a turn writes cost each turn about 1,900 instructions
    /// (counted with `bench/callgrind.sh`), a new session's as well, to
    /// spare only the streams that follow a non-streamed turn.
    pub(super) fn listed_lately(&self, tenant: &Tenant, session: &SessionId) -> bool {
        let member = all_sessions_member(tenant, session.as_str());
        self.listed
            .within(&member, Duration::from_millis(self.ttl_refresh_ms()))
    }

    /// Notes that the session's index entries were written.
    pub(super) fn note_listed(&self, tenant: &Tenant, session: &SessionId) {
        self.listed
            .note(&all_sessions_member(tenant, session.as_str()));
    }

    /// The same in `pipe`, for a server where every key is on one node.
    pub(super) fn add_session_to_indexes(
        &self,
        pipe: &mut redis::Pipeline,
        tenant: &Tenant,
        session: &SessionId,
        at_ms: u64,
    ) {
        for (key, member) in index_entries(tenant, session) {
            self.add_to_index(pipe, &key.to_redis(), &[(at_ms, member.as_str())]);
        }
    }

    /// One ZADD of `members` (score = last activity) to the index `key`,
    /// and, when due, the pruning of stale members and the TTL refresh.
    pub(super) fn add_to_index(
        &self,
        pipe: &mut redis::Pipeline,
        key: &str,
        members: &[(u64, &str)],
    ) {
        if self.gt() {
            pipe.cmd("ZADD").arg(key).arg("GT").arg(members).ignore();
        } else {
            pipe.zadd_multiple(key, members).ignore();
        }
        if self.prune_due(key) {
            pipe.zrembyscore(key, "-inf", format!("({}", self.cutoff_ms()))
                .ignore()
                .expire(key, self.ttl_secs())
                .ignore();
        }
    }

    /// The EVALSHA that appends `turns`, written straight into one command
    /// buffer (a `ScriptInvocation` copies every argument into a vector of
    /// its own first, then into the command).
    fn append_cmd(&self, turns: &[(&Tenant, &SessionId, &Turn)]) -> redis::Cmd {
        let (mut args, mut bytes) = (4, 64);
        for (_, _, turn) in turns {
            let messages = turn.if_new.len() + turn.messages.len();
            args += 10 + messages;
            bytes += 300 + turn.message_bytes();
        }
        let mut cmd = redis::Cmd::with_capacity(args, bytes);
        cmd.arg("EVALSHA")
            .arg(APPEND_TURNS.get_hash())
            .arg(2 * turns.len());
        for (tenant, session, _) in turns {
            cmd.arg(Key::Messages(tenant, session).to_redis())
                .arg(Key::SessionMeta(tenant, session).to_redis());
        }
        let now = now_ms();
        cmd.arg(self.ttl_secs())
            .arg(now)
            .arg(now.saturating_sub(self.ttl_refresh_ms()));
        for (_, _, turn) in turns {
            cmd.arg(turn.at_ms)
                .arg(turn.usage.prompt_tokens)
                .arg(turn.usage.completion_tokens)
                .arg(turn.usage.total_tokens)
                .arg(turn.model.as_deref().unwrap_or(""))
                .arg(&turn.id)
                .arg(turn.if_new.len())
                .arg(turn.if_new.len() + turn.messages.len());
            for message in turn.if_new.iter().chain(&turn.messages) {
                cmd.arg(message.as_bytes());
            }
        }
        cmd
    }

    /// The pipeline that appends `turns` (in one script call, or one a
    /// turn) and then adds each session to the indexes, one ZADD per index
    /// for the whole batch, each member at its latest time: a command costs
    /// Redis more to read, dispatch and answer than a member costs it to add.
    fn turns_pipe(
        &self,
        turns: &[(&Tenant, &SessionId, &Turn)],
        one_call: bool,
    ) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        // Calls of at most this many arguments, a turn never split: one
        // turn a call when it is 0. A call stays well under what any Redis
        // takes in one command (Redis 6 refuses over 1,048,576).
        let max_args = if one_call { MAX_CALL_ARGS } else { 0 };
        let (mut from, mut args) = (0, 0);
        for (i, (_, _, turn)) in turns.iter().enumerate() {
            let turn_args = 10 + turn.if_new.len() + turn.messages.len();
            if args + turn_args > max_args && i > from {
                pipe.add_command(self.append_cmd(&turns[from..i])).ignore();
                (from, args) = (i, 0);
            }
            args += turn_args;
        }
        pipe.add_command(self.append_cmd(&turns[from..])).ignore();
        // (index, member, last activity)
        let members = turns.iter().flat_map(|(tenant, session, turn)| {
            index_entries(tenant, session).map(|(key, member)| (key, member, turn.at_ms))
        });
        let mut members: Vec<(Key, String, u64)> = members.collect();
        members.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)).then(b.2.cmp(&a.2)));
        members.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);
        for index in members.chunk_by(|a, b| a.0 == b.0) {
            let scored: Vec<(u64, &str)> =
                index.iter().map(|(_, m, at)| (*at, m.as_str())).collect();
            self.add_to_index(&mut pipe, &index[0].0.to_redis(), &scored);
        }
        pipe
    }

    /// Sends `pipe`; when Redis does not know the turn script yet (first
    /// use, or after a restart) loads it and sends `pipe` again.
    async fn query_with_turn_script(&self, pipe: &redis::Pipeline) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        match self.timed(pipe.query_async::<()>(&mut conn)).await {
            Err(StoreError::Redis(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.timed(APPEND_TURNS.load_async(&mut conn)).await?;
                self.timed(pipe.query_async::<()>(&mut conn)).await
            }
            other => other,
        }
    }

    /// True at most once per `PRUNE_INTERVAL` per index: pruning and the TTL
    /// refresh need not ride on every write (listings prune too).
    fn prune_due(&self, key: &str) -> bool {
        self.pruned.due(key, PRUNE_INTERVAL)
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }

    async fn health(&self) -> StoreHealth {
        let result = self.ping().await;
        StoreHealth {
            store: StoreKind::Redis,
            connected: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
        }
    }

    async fn session_exists(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let key = Key::Messages(tenant, session).to_redis();
        self.timed(conn.exists::<_, bool>(key)).await
    }

    async fn append_turn(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        turn: &Turn,
    ) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.add_command(self.append_cmd(&[(tenant, session, turn)]))
            .ignore();
        self.query_with_turn_script(&pipe).await?;
        self.index_session(tenant, session, turn.at_ms).await
    }

    /// On a standalone server, the whole batch is one pipeline (one round
    /// trip, even for a single turn): the turns' script call, then each
    /// index once. A cluster appends turn by turn (its slots may live on
    /// different nodes).
    async fn append_turns(&self, turns: &[(Tenant, SessionId, Turn)]) -> Result<(), StoreError> {
        self.learn_version().await;
        if self.is_cluster() {
            for (tenant, session, turn) in turns {
                self.append_turn(tenant, session, turn).await?;
            }
            return Ok(());
        }
        let turns: Vec<(&Tenant, &SessionId, &Turn)> =
            turns.iter().map(|(t, s, turn)| (t, s, turn)).collect();
        if self.one_call_per_batch.load(Ordering::Relaxed) {
            match self
                .query_with_turn_script(&self.turns_pipe(&turns, true))
                .await
            {
                Err(StoreError::Redis(e))
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot) =>
                {
                    // A sharding proxy in front of a cluster: nothing of the
                    // call was applied; from now on one call per turn.
                    self.one_call_per_batch.store(false, Ordering::Relaxed);
                    tracing::info!(
                        "redis refuses a script over several slots; appending turn by turn"
                    );
                }
                other => return other,
            }
        }
        self.query_with_turn_script(&self.turns_pipe(&turns, false))
            .await
    }

    async fn read_messages(
        &self,
        tenant: &Tenant,
        session: &SessionId,
        range: MessageRange,
    ) -> Result<Option<Messages>, StoreError> {
        let key = Key::Messages(tenant, session).to_redis();
        let (start, stop): (isize, isize) = match range {
            MessageRange::All => (0, -1),
            MessageRange::Slice { len: 0, .. } => (1, 0),
            MessageRange::Slice {
                offset,
                len,
                from_end: false,
            } => (offset as isize, (offset + len) as isize - 1),
            MessageRange::Slice {
                offset,
                len,
                from_end: true,
            } => (-((offset + len) as isize), -(offset as isize) - 1),
        };
        let mut pipe = redis::pipe();
        pipe.llen(&key).lrange(&key, start, stop);
        let mut conn = self.conn.clone();
        let (total, raw): (usize, Vec<String>) = self.timed(pipe.query_async(&mut conn)).await?;
        if total == 0 {
            return Ok(None);
        }
        let first_index = match range {
            MessageRange::Slice {
                offset,
                from_end: true,
                ..
            } => total.saturating_sub(offset).saturating_sub(raw.len()),
            MessageRange::Slice { offset, .. } => offset.min(total),
            MessageRange::All => 0,
        };
        let messages = raw
            .iter()
            .map(|m| {
                serde_json::from_str(m).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(Messages {
            messages,
            first_index,
            total,
        }))
    }

    async fn session_info(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<Option<SessionInfo>, StoreError> {
        let messages_key = Key::Messages(tenant, session).to_redis();
        let meta_key = Key::SessionMeta(tenant, session).to_redis();
        let mut pipe = redis::pipe();
        pipe.llen(&messages_key).hgetall(&meta_key);
        let mut conn = self.conn.clone();
        let (count, meta): (usize, HashMap<String, String>) =
            self.timed(pipe.query_async(&mut conn)).await?;
        // Without messages, a session exists while its first answer streams:
        // the stream's opening named it in the meta.
        if count == 0 && !meta.contains_key("last_stream") {
            return Ok(None);
        }
        let number = |field: &str| {
            meta.get(field)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default()
        };
        let mut models: Vec<(u64, String)> = meta
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    v.parse().unwrap_or_default(),
                    k.strip_prefix("model:")?.to_owned(),
                ))
            })
            .collect();
        models.sort();
        Ok(Some(SessionInfo {
            message_count: count,
            created_at_ms: match number("created_ms") {
                0 => number("last_stream_ms"),
                created => created,
            },
            last_message_ms: number("last_message_ms"),
            models: models.into_iter().map(|(_, m)| m).collect(),
            usage: UsageTotals {
                prompt_tokens: number("prompt_tokens"),
                completion_tokens: number("completion_tokens"),
                total_tokens: number("total_tokens"),
            },
            last_stream: meta.get("last_stream").cloned(),
        }))
    }

    async fn list_sessions(
        &self,
        scope: &Scope,
        offset: usize,
        limit: usize,
    ) -> Result<SessionPage, StoreError> {
        let key = match scope {
            Scope::Tenant(t) => Key::Sessions(t).to_redis(),
            Scope::All => Key::AllSessions.to_redis(),
        };
        let mut pipe = redis::pipe();
        pipe.zrembyscore(&key, "-inf", format!("({}", self.cutoff_ms()))
            .ignore()
            .zcard(&key);
        if limit > 0 {
            pipe.zrevrange_withscores(&key, offset as isize, (offset + limit) as isize - 1);
        }
        let mut conn = self.conn.clone();
        let (total, rows): (usize, Vec<(String, f64)>) = if limit > 0 {
            self.timed(pipe.query_async(&mut conn)).await?
        } else {
            let (total,): (usize,) = self.timed(pipe.query_async(&mut conn)).await?;
            (total, Vec::new())
        };
        let entries = rows
            .into_iter()
            .filter_map(|(member, score)| {
                let (tenant, session_id) = match scope {
                    Scope::Tenant(t) => (t.clone(), member),
                    Scope::All => {
                        let (tenant, id) = member.split_once('/')?;
                        (Tenant::parse(tenant)?, id.to_owned())
                    }
                };
                Some(SessionEntry {
                    tenant,
                    session_id,
                    last_activity_ms: score as u64,
                })
            })
            .collect();
        Ok(SessionPage { entries, total })
    }

    async fn delete_session(
        &self,
        tenant: &Tenant,
        session: &SessionId,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let keys = [
            Key::Messages(tenant, session).to_redis(),
            Key::SessionMeta(tenant, session).to_redis(),
        ];
        self.listed
            .forget(&all_sessions_member(tenant, session.as_str()));
        let deleted: usize = self.timed(conn.del(&keys)).await?;
        for (key, member) in index_entries(tenant, session) {
            self.timed(conn.zrem::<_, _, ()>(key.to_redis(), member))
                .await?;
        }
        Ok(deleted > 0)
    }

    async fn tenants_of(&self, session: &SessionId) -> Result<Vec<Tenant>, StoreError> {
        let key = Key::AllSessions.to_redis();
        let pattern = format!("*/{session}");
        let cutoff = self.cutoff_ms() as f64;
        let mut conn = self.conn.clone();
        let scan = async {
            let mut found = Vec::new();
            // Redis looks at 10 members a call unless told: a round trip
            // for every 10 sessions of every tenant.
            let mut zscan = redis::cmd("ZSCAN");
            zscan
                .arg(&key)
                .cursor_arg(0)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let mut iter = zscan.iter_async::<(String, f64)>(&mut conn).await?;
            while let Some(item) = futures_util::StreamExt::next(&mut iter).await {
                let (member, score) = item?;
                if score >= cutoff
                    && let Some(tenant) = member.split_once('/').and_then(|(t, _)| Tenant::parse(t))
                {
                    found.push(tenant);
                }
            }
            Ok::<_, redis::RedisError>(found)
        };
        let mut tenants = self.timed(scan).await?;
        tenants.sort();
        Ok(tenants)
    }
}

/// The session's entries in the indexes: its tenant's, by session id, and
/// the admin's, by `tenant/session`.
fn index_entries<'a>(tenant: &'a Tenant, session: &SessionId) -> [(Key<'a>, String); 2] {
    [
        (Key::Sessions(tenant), session.as_str().to_owned()),
        (
            Key::AllSessions,
            all_sessions_member(tenant, session.as_str()),
        ),
    ]
}

/// Every string in `value`, one after another.
fn collect_text(value: &redis::Value, text: &mut String) {
    match value {
        redis::Value::BulkString(bytes) => text.push_str(&String::from_utf8_lossy(bytes)),
        redis::Value::SimpleString(s) => text.push_str(s),
        redis::Value::VerbatimString { text: s, .. } => text.push_str(s),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().for_each(|v| collect_text(v, text));
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_text(v, text)),
        _ => {}
    }
    text.push('\n');
}

/// True when `INFO server` names a version that takes `ZADD GT`: Redis
/// 6.2 or later (Valkey and others report the Redis version they match).
fn takes_zadd_gt(info: &str) -> bool {
    let Some(version) = info.lines().find_map(|l| l.strip_prefix("redis_version:")) else {
        return false;
    };
    let mut parts = version
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 2)
}

/// The URL with any password replaced, for logs.
/// The CA certificates of `redis.ca_file`, for `rediss://` connections.
pub fn private_ca(path: Option<&std::path::Path>) -> Result<Option<TlsCertificates>, StoreError> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path).map_err(|e| StoreError::CaFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://")
}

/// A client for `url`, trusting the private CA for a `rediss://` one.
fn open_client(url: &str, tls: Option<&TlsCertificates>) -> redis::RedisResult<redis::Client> {
    match tls {
        Some(certs) if is_tls(url) => redis::Client::build_with_tls(url, certs.clone()),
        _ => redis::Client::open(url),
    }
}

pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparsable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{redacted, takes_zadd_gt};

    #[test]
    fn zadd_gt_is_used_from_redis_6_2() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        for (version, gt) in [
            ("6.0.16", false),
            ("6.2.0", true),
            ("7.0.15", true),
            ("10.0.1", true),
            ("5.0.7", false),
            ("garbage", false),
        ] {
            assert_eq!(takes_zadd_gt(&info(version)), gt, "{version}");
        }
        assert!(!takes_zadd_gt("# Server\r\n"), "no version");
    }

    #[test]
    fn a_clusters_info_is_read_from_any_master() {
        use redis::Value;
        let node = |version: &str| {
            Value::BulkString(format!("# Server\r\nredis_version:{version}\r\n").into_bytes())
        };
        let answer = Value::Map(vec![
            (Value::SimpleString("10.0.0.1:7000".into()), node("7.0.15")),
            (Value::SimpleString("10.0.0.2:7000".into()), node("7.0.15")),
        ]);
        let mut text = String::new();
        super::collect_text(&answer, &mut text);
        assert!(takes_zadd_gt(&text), "{text}");
    }

    #[test]
    fn passwords_never_reach_the_log() {
        let shown = redacted("redis://:hunter2@redis.internal:6380/2");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redis.internal:6380/2"), "{shown}");
    }
}
