//! Stream checkpoints in Redis. A stream's events are appended in batches,
//! one stream entry (XADD) per batch, with the batch's first event number in
//! its id (`{first}-1`) so a resume finds its starting batch with one
//! XREVRANGE. Trailing bytes after the last event (an unterminated line, a
//! final comment) are one more entry, `{events}-2`. The record beside it is
//! a hash; both share the `{x:<id>}` hash tag.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, AsyncConnectionConfig};

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

/// Adds one batch's XADD: entry `{first}-1` with the first event's number,
/// the time it was written (`at`, ms: the owner's heartbeat while batches
/// flow), the events' lengths and their bytes end to end.
fn add_batch(pipe: &mut redis::Pipeline, events_key: &str, batch: &EventBatch) {
    let lens: Vec<String> = batch.events.iter().map(|e| e.len().to_string()).collect();
    let data: Vec<u8> = batch
        .events
        .iter()
        .flat_map(|e| e.iter().copied())
        .collect();
    pipe.cmd("XADD")
        .arg(events_key)
        .arg(format!("{}-1", batch.first))
        .arg("n")
        .arg(batch.first)
        .arg("at")
        .arg(now_ms())
        .arg("lens")
        .arg(lens.join(","))
        .arg("d")
        .arg(data)
        .ignore();
}

/// An XRANGE/XREAD entry: its id and its flat field/value list.
type Entry = (String, Vec<Vec<u8>>);

/// Where cancel requests are broadcast: every replica listens, the one
/// that owns the stream acts.
pub const CANCEL_CHANNEL: &str = "tether:cancel";

/// Where flush requests are broadcast, the same way.
pub const FLUSH_CHANNEL: &str = "tether:flush";

#[async_trait]
impl CheckpointStore for RedisStore {
    async fn open_stream(
        &self,
        record: &StreamRecord,
        ttl: Duration,
        history_ttl: Duration,
    ) -> Result<(), StoreError> {
        self.learn_version().await;
        let meta = Key::StreamMeta(&record.id).to_redis();
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
            &meta,
            &[
                ("state", record.state.as_str().to_string()),
                ("tenant", record.tenant.to_string()),
                ("session", record.session.clone()),
                ("events", record.events.to_string()),
                ("created_ms", record.created_ms.to_string()),
                ("heartbeat_ms", record.heartbeat_ms.to_string()),
            ],
        )
        .ignore()
        .expire(&meta, ttl.as_secs() as i64)
        .ignore();
        let mut conn = self.conn.clone();
        let Ok(session) = SessionId::parse(&record.session) else {
            return self.timed(pipe.query_async::<()>(&mut conn)).await;
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
            self.timed(pipe.query_async::<()>(&mut conn)).await?;
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
            self.timed(pipe.query_async::<()>(&mut conn)).await?;
        }
        if !listed {
            self.note_listed(&record.tenant, &session);
        }
        Ok(())
    }

    async fn append_events(
        &self,
        id: &str,
        batch: &EventBatch,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let events_key = Key::StreamEvents(id).to_redis();
        let mut pipe = redis::pipe();
        add_batch(&mut pipe, &events_key, batch);
        if batch.first == 0 {
            // Until the stream closes, its events live as long as its record.
            pipe.expire(&events_key, ttl.as_secs() as i64).ignore();
        }
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    async fn heartbeat(&self, id: &str, heartbeat_ms: u64, events: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.timed(conn.hset_multiple::<_, _, _, ()>(
            Key::StreamMeta(id).to_redis(),
            &[("heartbeat_ms", heartbeat_ms), ("events", events)],
        ))
        .await
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
    ) -> Result<(), StoreError> {
        let events_key = Key::StreamEvents(&record.id).to_redis();
        let meta = Key::StreamMeta(&record.id).to_redis();
        let retention = retention.as_secs().max(1) as i64;
        let mut pipe = redis::pipe();
        if let Some(batch) = last {
            add_batch(&mut pipe, &events_key, batch);
        }
        if let Some(tail) = tail {
            pipe.cmd("XADD")
                .arg(&events_key)
                .arg(format!("{}-2", record.events))
                .arg("tail")
                .arg(tail.as_ref())
                .ignore();
        }
        pipe.hset_multiple(
            &meta,
            &[
                ("state", record.state.as_str().to_string()),
                ("events", record.events.to_string()),
                ("heartbeat_ms", record.heartbeat_ms.to_string()),
            ],
        )
        .ignore()
        .expire(&meta, retention)
        .ignore()
        .expire(&events_key, retention)
        .ignore();
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    async fn stream_record(&self, id: &str) -> Result<Option<StreamRecord>, StoreError> {
        let meta = Key::StreamMeta(id).to_redis();
        let mut pipe = redis::pipe();
        pipe.hgetall(&meta)
            .cmd("XREVRANGE")
            .arg(Key::StreamEvents(id).to_redis())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let mut conn = self.conn.clone();
        let (fields, last): (HashMap<String, String>, Vec<Entry>) =
            self.timed(pipe.query_async(&mut conn)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        // The record's count is refreshed with the heartbeat; the last
        // batch tells the count as of now.
        let mut checkpointed = Vec::new();
        if let Some(entry) = last.first() {
            let mut ignored_tail = None;
            absorb(entry, 0, &mut checkpointed, &mut ignored_tail)?;
        }
        let last_batch_end = last
            .first()
            .and_then(|(_, flat)| batch_first(flat))
            .map_or(0, |first| first + checkpointed.len() as u64);
        let number = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let corrupt = |what: &str| StoreError::Corrupt(format!("{meta}: {what}"));
        Ok(Some(StreamRecord {
            id: id.to_owned(),
            tenant: fields
                .get("tenant")
                .and_then(|t| Tenant::parse(t))
                .ok_or_else(|| corrupt("tenant"))?,
            session: fields.get("session").cloned().unwrap_or_default(),
            state: fields
                .get("state")
                .and_then(|s| StreamState::parse(s))
                .ok_or_else(|| corrupt("state"))?,
            events: number("events").max(last_batch_end),
            created_ms: number("created_ms"),
            heartbeat_ms: number("heartbeat_ms").max(
                last.first()
                    .map_or(0, |(_, flat)| number_field(flat, b"at").unwrap_or(0)),
            ),
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
        let Some(entry) = top.first() else {
            return Ok(Checkpointed::default());
        };
        if let Some(first) = batch_first(&entry.1) {
            let mut events = Vec::new();
            absorb(entry, 0, &mut events, &mut None)?;
            return Ok(Checkpointed {
                events: first + events.len() as u64,
                tail: false,
            });
        }
        // The tail, `{events}-2`, is the last entry of a closed stream.
        let events = entry
            .0
            .split_once('-')
            .and_then(|(n, _)| n.parse().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("stream entry {}", entry.0)))?;
        Ok(Checkpointed { events, tail: true })
    }

    async fn read_events(&self, id: &str, from: u64) -> Result<EventsRead, StoreError> {
        let key = Key::StreamEvents(id).to_redis();
        let mut conn = self.conn.clone();
        let start: Vec<Entry> = self
            .timed(
                redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg(format!("{from}-1"))
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
        let meta = Key::StreamMeta(id).to_redis();
        let mut conn = self.conn.clone();
        // "Set if the record exists": a cancel for an expired stream must
        // not create a record without a TTL. The flag is for the owner's
        // next heartbeat, should it miss the broadcast below.
        let script = redis::Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'cancel', '1') end return 0",
        );
        self.timed(script.key(&meta).invoke_async::<()>(&mut conn))
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

/// The first event number of a batch entry (`None` for the tail entry).
fn batch_first(flat: &[Vec<u8>]) -> Option<u64> {
    number_field(flat, b"n")
}

/// A numeric field of an entry.
fn number_field(flat: &[Vec<u8>], name: &[u8]) -> Option<u64> {
    let value = flat.chunks(2).find(|kv| kv[0] == name)?.get(1)?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Adds an entry's events numbered `from` or later (and its tail) to the output.
fn absorb(
    entry: &Entry,
    from: u64,
    events: &mut Vec<Bytes>,
    tail: &mut Option<Bytes>,
) -> Result<(), StoreError> {
    let (id, flat) = entry;
    let field = |name: &[u8]| {
        flat.chunks(2)
            .find(|kv| kv[0] == name)
            .and_then(|kv| kv.get(1))
    };
    if let Some(bytes) = field(b"tail") {
        *tail = Some(Bytes::copy_from_slice(bytes));
        return Ok(());
    }
    let corrupt = || StoreError::Corrupt(format!("stream entry {id}"));
    let first: u64 = field(b"n")
        .and_then(|n| std::str::from_utf8(n).ok()?.parse().ok())
        .ok_or_else(corrupt)?;
    let lens = field(b"lens")
        .and_then(|l| std::str::from_utf8(l).ok())
        .ok_or_else(corrupt)?;
    let data = Bytes::copy_from_slice(field(b"d").ok_or_else(corrupt)?);
    let mut offset = 0;
    for (i, len) in lens.split(',').filter(|l| !l.is_empty()).enumerate() {
        let len: usize = len.parse().map_err(|_| corrupt())?;
        let event = data.get(offset..offset + len).ok_or_else(corrupt)?;
        if first + i as u64 >= from {
            events.push(data.slice_ref(event));
        }
        offset += len;
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
