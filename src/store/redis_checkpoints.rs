//! Stream checkpoints in Redis, one stream key per stream (`{x:<id>}:events`),
//! whose entries are numbered by their first event so that a resume finds
//! its starting batch with one XREVRANGE:
//!
//! - `0-1`, the opening: the record (`tenant`, `session`, `created_ms`) as
//!   an empty batch;
//! - `{first}-2`, a batch: the first event's number `n`, the time it was
//!   written `at` (the owner's heartbeat while batches flow), the events'
//!   lengths `lens` and their bytes end to end `d`;
//! - the closing, a batch like the others that also holds the final
//!   `state` and the trailing bytes after the last event (`tail`), if any.
//!
//! The record has no key of its own: its opening, its latest entry and its
//! closing are entries of the stream, so a stream costs its batches plus one
//! EXPIRE when it opens and one when it closes. The hash `{x:<id>}:meta`
//! exists only when needed: an owner's heartbeats while no batch flows, and
//! a cancel request for the owner to find should it miss the broadcast.
//!
//! Streams written by replicas built before 2026-12-07 (a record hash with
//! `state`, `tenant`, `session`; batches `{first}-1`; the tail alone in
//! `{events}-2`) are read as well.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::checkpoints::{
    CheckpointStore, Checkpointed, Control, ControlRequests, EventBatch, EventsRead, Follower,
    StreamRecord, StreamState,
};
use super::keys::Key;
use super::redis::RedisStore;
use super::redis_conn::Nodes;
use super::{StoreError, now_ms};
use crate::session::SessionId;
use crate::tenant::Tenant;

/// The XADD of a batch entry, `{first}-2`: the first event's number, the
/// time it was written (`at`, ms), the events' lengths and their bytes end
/// to end. The opening and the closing add their fields to it. The events
/// are written straight into the command's buffer, sized for them once:
/// gathered into a vector of their own first, a byte at a time, they cost
/// 2,500 instructions a streamed chunk (`bench/callgrind.sh stream`).
fn batch_entry(events_key: &str, id: &str, batch: &EventBatch) -> redis::Cmd {
    let bytes: usize = batch.events.iter().map(|e| e.len()).sum();
    let mut cmd =
        redis::Cmd::with_capacity(14, 128 + events_key.len() + 8 * batch.events.len() + bytes);
    cmd.arg("XADD")
        .arg(events_key)
        .arg(id)
        .arg("n")
        .arg(batch.first)
        .arg("at")
        .arg(now_ms())
        .arg("lens")
        .arg(Lengths(&batch.events))
        .arg("d")
        .arg(EndToEnd(&batch.events));
    cmd
}

/// Events as one argument: their bytes end to end.
struct EndToEnd<'a>(&'a [Bytes]);

impl redis::ToRedisArgs for EndToEnd<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        for event in self.0 {
            arg.write_all(event)
                .expect("a command's buffer takes any write");
        }
    }
}

/// Events' lengths as one argument: `len,len,...`.
struct Lengths<'a>(&'a [Bytes]);

impl redis::ToRedisArgs for Lengths<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        let mut number = itoa::Buffer::new();
        for (i, event) in self.0.iter().enumerate() {
            let separator: &[u8] = if i == 0 { b"" } else { b"," };
            arg.write_all(separator)
                .and_then(|()| arg.write_all(number.format(event.len()).as_bytes()))
                .expect("a command's buffer takes any write");
        }
    }
}

/// The id of the batch entry that starts at event `first`.
fn batch_id(first: u64) -> String {
    format!("{first}-2")
}

/// The id of a stream's opening entry.
const OPENING_ID: &str = "0-1";

/// An XRANGE/XREAD entry: its id and its flat field/value list.
type Entry = (String, Vec<Vec<u8>>);

/// Where cancel requests are broadcast: every replica listens, the one
/// that owns the stream acts.
pub const CANCEL_CHANNEL: &str = "tether:cancel";

/// Where flush requests are broadcast, the same way.
pub const FLUSH_CHANNEL: &str = "tether:flush";

/// Sets the cancel flag of a stream that exists (an expired one must not
/// get a key without a TTL), in the hash that expires with its events. The
/// flag is for the owner's next heartbeat, should it miss the broadcast.
/// KEYS: the stream's hash, its events.
const REQUEST_CANCEL: &str = "
    local ttl = redis.call('PTTL', KEYS[2])
    if ttl > 0 then
        redis.call('HSET', KEYS[1], 'cancel', '1')
        if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
        return 1
    end
    if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'cancel', '1') end
    return 0";

#[async_trait]
impl CheckpointStore for RedisStore {
    async fn open_stream(
        &self,
        record: &StreamRecord,
        ttl: Duration,
        history_ttl: Duration,
    ) -> Result<(), StoreError> {
        self.learn_version().await;
        let events_key = Key::StreamEvents(&record.id).to_redis();
        let opening = EventBatch {
            first: 0,
            events: Vec::new(),
        };
        let mut entry = batch_entry(&events_key, OPENING_ID, &opening);
        entry
            .arg("tenant")
            .arg(record.tenant.as_str())
            .arg("session")
            .arg(&record.session)
            .arg("created_ms")
            .arg(record.created_ms);
        let mut pipe = redis::pipe();
        pipe.add_command(entry)
            .expire(&events_key, ttl.as_secs() as i64);
        let mut conn = self.conn.clone();
        let Ok(session) = SessionId::parse(&record.session) else {
            return self.query_opening(&pipe, &mut conn).await;
        };
        // The session is listed from its stream's start: a console sees a
        // conversation while its first answer streams, and the admin token
        // finds it by session id (`tenants_of`). Its meta names the stream.
        // A session this replica listed lately is left as it is listed: a
        // chat's or an agent's later turns cost two commands fewer.
        let session_meta = Key::SessionMeta(&record.tenant, &session).to_redis();
        let at = record.created_ms;
        let listed = self.listed_lately(&record.tenant, &session);
        if self.is_cluster() {
            // The session's and the indexes' slots may be other nodes':
            // a round trip each. Elsewhere one round trip does it all.
            self.query_opening(&pipe, &mut conn).await?;
            pipe = redis::pipe();
        }
        pipe.cmd("HSET")
            .arg(&session_meta)
            .arg("last_stream")
            .arg(&record.id)
            .arg("last_stream_ms")
            .arg(at)
            .ignore()
            .expire(&session_meta, history_ttl.as_secs() as i64)
            .ignore();
        if self.is_cluster() {
            self.timed(pipe.query_async::<()>(&mut conn)).await?;
            if !listed {
                self.index_session(&record.tenant, &session, at).await?;
            }
        } else {
            if !listed {
                self.add_session_to_indexes(&mut pipe, &record.tenant, &session, at);
            }
            self.query_opening(&pipe, &mut conn).await?;
        }
        if !listed {
            self.note_listed(&record.tenant, &session);
        }
        Ok(())
    }

    async fn append_events(&self, id: &str, batch: &EventBatch) -> Result<(), StoreError> {
        let events_key = Key::StreamEvents(id).to_redis();
        let mut conn = self.conn.clone();
        self.timed(
            batch_entry(&events_key, &batch_id(batch.first), batch).query_async::<()>(&mut conn),
        )
        .await
    }

    async fn heartbeat(
        &self,
        id: &str,
        heartbeat_ms: u64,
        events: u64,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let meta = Key::StreamMeta(id).to_redis();
        let mut pipe = redis::pipe();
        pipe.hset_multiple(&meta, &[("heartbeat_ms", heartbeat_ms), ("events", events)])
            .ignore();
        if let Some(ttl) = ttl {
            pipe.expire(&meta, ttl.as_secs() as i64).ignore();
        }
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    async fn cancel_requested(&self, id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let cancel: Option<String> = self
            .timed(
                redis::cmd("HGET")
                    .arg(Key::StreamMeta(id).to_redis())
                    .arg("cancel")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(cancel.is_some())
    }

    async fn close_stream(
        &self,
        record: &StreamRecord,
        last: Option<&EventBatch>,
        tail: Option<Bytes>,
        retention: Duration,
        beaten: bool,
    ) -> Result<(), StoreError> {
        let events_key = Key::StreamEvents(&record.id).to_redis();
        let retention = retention.as_secs().max(1) as i64;
        let nothing_left = EventBatch {
            first: record.events,
            events: Vec::new(),
        };
        let last = last.unwrap_or(&nothing_left);
        let mut closing = batch_entry(&events_key, &batch_id(last.first), last);
        closing.arg("state").arg(record.state.as_str());
        if let Some(tail) = tail {
            closing.arg("tail").arg(tail.as_ref());
        }
        let mut pipe = redis::pipe();
        pipe.add_command(closing)
            .ignore()
            .expire(&events_key, retention)
            .ignore();
        if beaten {
            pipe.expire(Key::StreamMeta(&record.id).to_redis(), retention)
                .ignore();
        }
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    async fn stream_record(&self, id: &str) -> Result<Option<StreamRecord>, StoreError> {
        let meta = Key::StreamMeta(id).to_redis();
        let events_key = Key::StreamEvents(id).to_redis();
        let mut pipe = redis::pipe();
        pipe.hgetall(&meta)
            .cmd("XRANGE")
            .arg(&events_key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XREVRANGE")
            .arg(&events_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut conn = self.conn.clone();
        let (fields, first, last): (HashMap<String, String>, Vec<Entry>, Vec<Entry>) =
            self.timed(pipe.query_async(&mut conn)).await?;
        let corrupt = |what: &str| StoreError::Corrupt(format!("{events_key}: {what}"));
        let text = |flat: &[Vec<u8>], name: &[u8]| {
            field(flat, name).and_then(|v| String::from_utf8(v.to_vec()).ok())
        };
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        // The opening entry holds the record; a stream written before
        // 2026-12-07 has it in the hash.
        let opening = first.first().map(|(_, flat)| flat.as_slice());
        let (tenant, session, created_ms, mut state) =
            match opening.filter(|flat| field(flat, b"tenant").is_some()) {
                Some(flat) => (
                    text(flat, b"tenant"),
                    text(flat, b"session").unwrap_or_default(),
                    number_field(flat, b"created_ms").unwrap_or(0),
                    StreamState::Active,
                ),
                None if fields.contains_key("tenant") => (
                    fields.get("tenant").cloned(),
                    fields.get("session").cloned().unwrap_or_default(),
                    number("created_ms"),
                    fields
                        .get("state")
                        .and_then(|s| StreamState::parse(s))
                        .ok_or_else(|| corrupt("state"))?,
                ),
                None => return Ok(None),
            };
        let tenant = tenant
            .as_deref()
            .and_then(Tenant::parse)
            .ok_or_else(|| corrupt("tenant"))?;
        // The latest entry tells the count, the heartbeat and, once
        // written, the end; heartbeats written while no batch flowed are in
        // the hash.
        let mut events = number("events");
        let mut heartbeat_ms = number("heartbeat_ms");
        if let Some(entry @ (_, flat)) = last.first() {
            let stored = entry_end(entry)?;
            events = events.max(stored.events);
            heartbeat_ms = heartbeat_ms.max(number_field(flat, b"at").unwrap_or(0));
            if let Some(closed) = field(flat, b"state") {
                state = std::str::from_utf8(closed)
                    .ok()
                    .and_then(StreamState::parse)
                    .ok_or_else(|| corrupt("state"))?;
            }
        }
        Ok(Some(StreamRecord {
            id: id.to_owned(),
            tenant,
            session,
            state,
            events,
            created_ms,
            heartbeat_ms,
        }))
    }

    async fn checkpointed(&self, id: &str) -> Result<Checkpointed, StoreError> {
        let mut conn = self.conn.clone();
        let top: Vec<Entry> = self
            .timed(
                redis::cmd("XREVRANGE")
                    .arg(Key::StreamEvents(id).to_redis())
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        match top.first() {
            Some(entry) => entry_end(entry),
            None => Ok(Checkpointed::default()),
        }
    }

    async fn read_events(&self, id: &str, from: u64) -> Result<EventsRead, StoreError> {
        let key = Key::StreamEvents(id).to_redis();
        let mut conn = self.conn.clone();
        // The last entry that starts at `from` or before holds event `from`
        // (an id without its sequence number ends a range at its largest).
        let start: Vec<Entry> = self
            .timed(
                redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg(from)
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn),
            )
            .await?;
        let first_id = start.first().map_or("-".to_string(), |(id, _)| id.clone());
        let entries: Vec<Entry> = self
            .timed(
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&first_id)
                    .arg("+")
                    .query_async(&mut conn),
            )
            .await?;
        let mut read = EventsRead {
            cursor: "0-0".into(),
            ..EventsRead::default()
        };
        for entry in entries {
            absorb(&entry, from, &mut read.events, &mut read.tail)?;
            read.cursor = entry.0;
        }
        Ok(read)
    }

    async fn follower(&self) -> Result<Box<dyn Follower>, StoreError> {
        let node = match &self.nodes {
            Nodes::Cluster(nodes) => {
                return Ok(Box::new(ClusterFollower {
                    node: nodes[0].clone(),
                    conn: None,
                }));
            }
            Nodes::Standalone(client) => (**client).clone(),
            Nodes::Sentinel(master) => self.timed(master.get()).await?.client,
        };
        // No response timeout: the blocking read sets its own bound.
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let conn = self
            .timed(node.get_multiplexed_async_connection_with_config(&config))
            .await;
        if let (Err(_), Nodes::Sentinel(master)) = (&conn, &self.nodes) {
            master.forget_current();
        }
        Ok(Box::new(RedisFollower { conn: conn? }))
    }

    async fn request_cancel(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(REQUEST_CANCEL);
        self.timed(
            script
                .key(Key::StreamMeta(id).to_redis())
                .key(Key::StreamEvents(id).to_redis())
                .invoke_async::<()>(&mut conn),
        )
        .await?;
        self.timed(
            redis::cmd("PUBLISH")
                .arg(CANCEL_CHANNEL)
                .arg(id)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn request_flush(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.timed(
            redis::cmd("PUBLISH")
                .arg(FLUSH_CHANNEL)
                .arg(id)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn control_requests(&self) -> Result<ControlRequests, StoreError> {
        let candidates = match &self.nodes {
            Nodes::Standalone(client) => vec![(**client).clone()],
            Nodes::Cluster(nodes) => nodes.clone(),
            Nodes::Sentinel(master) => vec![self.timed(master.get()).await?.client],
        };
        let mut last_error = None;
        let mut subscribed = None;
        for node in &candidates {
            match self.timed(node.get_async_pubsub()).await {
                Ok(pubsub) => {
                    subscribed = Some(pubsub);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let Some(mut pubsub) = subscribed else {
            // A master that cannot be reached is looked up again next time,
            // even if no other command has failed on it yet (an idle replica).
            if let Nodes::Sentinel(master) = &self.nodes {
                master.forget_current();
            }
            return Err(last_error.unwrap_or(StoreError::Corrupt("no node to subscribe to".into())));
        };
        self.timed(pubsub.subscribe(&[CANCEL_CHANNEL, FLUSH_CHANNEL]))
            .await?;
        let requests =
            futures_util::StreamExt::filter_map(pubsub.into_on_message(), |msg| async move {
                let id = msg.get_payload::<String>().ok()?;
                Some(match msg.get_channel_name() {
                    FLUSH_CHANNEL => Control::Flush(id),
                    _ => Control::Cancel(id),
                })
            });
        Ok(Box::pin(requests))
    }

    async fn session_stream(
        &self,
        tenant: &Tenant,
        session: &str,
    ) -> Result<Option<String>, StoreError> {
        let Ok(session) = SessionId::parse(session) else {
            return Ok(None);
        };
        let key = Key::SessionMeta(tenant, &session).to_redis();
        let mut conn = self.conn.clone();
        self.timed(
            redis::cmd("HGET")
                .arg(&key)
                .arg("last_stream")
                .query_async(&mut conn),
        )
        .await
    }
}

impl RedisStore {
    /// Sends a pipeline whose first command writes a stream's opening
    /// entry: an opening that is there already (a retry whose first try
    /// landed, its answer lost) is no error.
    async fn query_opening(
        &self,
        pipe: &redis::Pipeline,
        conn: &mut super::redis_conn::RedisConn,
    ) -> Result<(), StoreError> {
        match self.timed(pipe.query_async::<()>(conn)).await {
            Err(StoreError::Redis(e)) if only_the_opening_was_there(&e) => Ok(()),
            other => other,
        }
    }
}

/// True when the one command of a pipeline that failed is its first, the
/// opening, refused because its entry is there already.
fn only_the_opening_was_there(error: &redis::RedisError) -> bool {
    let Some(failed) = error.clone().into_server_errors() else {
        return false;
    };
    matches!(&failed[..], [(0, e)] if e.details().is_some_and(|d| d.contains("equal or smaller")))
}

/// A field of an entry.
fn field<'a>(flat: &'a [Vec<u8>], name: &[u8]) -> Option<&'a [u8]> {
    flat.chunks(2)
        .find(|kv| kv[0] == name)?
        .get(1)
        .map(Vec::as_slice)
}

/// A numeric field of an entry.
fn number_field(flat: &[Vec<u8>], name: &[u8]) -> Option<u64> {
    std::str::from_utf8(field(flat, name)?).ok()?.parse().ok()
}

/// How far the checkpoints got, as the latest entry tells.
fn entry_end(entry: &Entry) -> Result<Checkpointed, StoreError> {
    let (id, flat) = entry;
    let corrupt = || StoreError::Corrupt(format!("stream entry {id}"));
    let Some(first) = number_field(flat, b"n") else {
        // A tail alone, `{events}-2`: the last entry of a stream closed
        // before 2026-12-07.
        let events = id
            .split_once('-')
            .and_then(|(n, _)| n.parse().ok())
            .ok_or_else(corrupt)?;
        return Ok(Checkpointed {
            events,
            closed: true,
        });
    };
    let lens = field(flat, b"lens").ok_or_else(corrupt)?;
    let count = lens.split(|&b| b == b',').filter(|l| !l.is_empty()).count();
    Ok(Checkpointed {
        events: first + count as u64,
        closed: field(flat, b"state").is_some(),
    })
}

/// Adds an entry's events numbered `from` or later to `events`, and sets
/// `end` when the entry is the stream's closing (to its trailing bytes,
/// empty when it has none).
fn absorb(
    entry: &Entry,
    from: u64,
    events: &mut Vec<Bytes>,
    end: &mut Option<Bytes>,
) -> Result<(), StoreError> {
    let (id, flat) = entry;
    let tail = field(flat, b"tail").map(Bytes::copy_from_slice);
    let corrupt = || StoreError::Corrupt(format!("stream entry {id}"));
    let Some(first) = number_field(flat, b"n") else {
        // The tail alone, as written before 2026-12-07.
        *end = Some(tail.ok_or_else(corrupt)?);
        return Ok(());
    };
    let lens = field(flat, b"lens")
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or_else(corrupt)?;
    let data = Bytes::copy_from_slice(field(flat, b"d").ok_or_else(corrupt)?);
    let mut offset = 0;
    for (i, len) in lens.split(',').filter(|l| !l.is_empty()).enumerate() {
        let len: usize = len.parse().map_err(|_| corrupt())?;
        let event = data.get(offset..offset + len).ok_or_else(corrupt)?;
        if first + i as u64 >= from {
            events.push(data.slice_ref(event));
        }
        offset += len;
    }
    if field(flat, b"state").is_some() {
        *end = Some(tail.unwrap_or_default());
    }
    Ok(())
}

/// A follower on a connection of its own to a standalone server.
struct RedisFollower {
    conn: MultiplexedConnection,
}

#[async_trait]
impl Follower for RedisFollower {
    async fn next(
        &mut self,
        id: &str,
        cursor: &mut String,
        from: u64,
        block: Duration,
    ) -> Result<(Vec<Bytes>, Option<Bytes>), StoreError> {
        let reply = xread_block(&mut self.conn, id, cursor, block).await?;
        take_entries(reply, cursor, from)
    }
}

/// A follower on a cluster: a plain connection of its own to the node that
/// serves the stream's slot, found by following the MOVED redirection.
struct ClusterFollower {
    /// The node to ask first, then the one a redirection named.
    node: redis::Client,
    conn: Option<MultiplexedConnection>,
}

/// Redirections followed at most per read (a slot moves rarely; twice
/// covers a failover during the read).
const MAX_REDIRECTS: usize = 3;

#[async_trait]
impl Follower for ClusterFollower {
    async fn next(
        &mut self,
        id: &str,
        cursor: &mut String,
        from: u64,
        block: Duration,
    ) -> Result<(Vec<Bytes>, Option<Bytes>), StoreError> {
        let mut redirects = 0;
        loop {
            if self.conn.is_none() {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                self.conn = Some(
                    self.node
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                );
            }
            let conn = self.conn.as_mut().expect("connected above");
            match xread_block(conn, id, cursor, block).await {
                Ok(reply) => return take_entries(reply, cursor, from),
                Err(e) if redirects < MAX_REDIRECTS && e.redirect_node().is_some() => {
                    let (addr, _) = e.redirect_node().expect("checked");
                    self.node = redirected(&self.node, addr)?;
                    self.conn = None;
                    redirects += 1;
                }
                Err(e) => {
                    // A dead node: start over from the first one next time.
                    self.conn = None;
                    return Err(e.into());
                }
            }
        }
    }
}

/// The same client settings (credentials, TLS, db) for another `host:port`.
fn redirected(client: &redis::Client, addr: &str) -> Result<redis::Client, StoreError> {
    let (host, port) = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| StoreError::Corrupt(format!("redirection to {addr:?}")))?;
    let info = client.get_connection_info().clone();
    let addr = match info.addr().clone() {
        redis::ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        },
        _ => redis::ConnectionAddr::Tcp(host, port),
    };
    Ok(redis::Client::open(info.set_addr(addr))?)
}

type XreadReply = Option<Vec<(String, Vec<Entry>)>>;

async fn xread_block(
    conn: &mut MultiplexedConnection,
    id: &str,
    cursor: &str,
    block: Duration,
) -> redis::RedisResult<XreadReply> {
    redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS")
        .arg(Key::StreamEvents(id).to_redis())
        .arg(cursor)
        .query_async(conn)
        .await
}

/// Events numbered `from` or later from an XREAD reply, the tail if any,
/// and the cursor advanced past them.
fn take_entries(
    reply: XreadReply,
    cursor: &mut String,
    from: u64,
) -> Result<(Vec<Bytes>, Option<Bytes>), StoreError> {
    let (mut events, mut tail) = (Vec::new(), None);
    for (_, entries) in reply.unwrap_or_default() {
        for entry in entries {
            absorb(&entry, from, &mut events, &mut tail)?;
            *cursor = entry.0;
        }
    }
    Ok((events, tail))
}
