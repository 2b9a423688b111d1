//! Listens for requests broadcast through the checkpoint store to the
//! replica that reads a stream's upstream: a cancel (`DELETE
//! /tether/streams/{id}` answered by any replica) reaches it at once (a
//! missed one, say during a Redis restart, is caught by the owner's next
//! heartbeat), and a flush (a reader on another replica is about to follow
//! the stream) makes its checkpoint writer write at once instead of at the
//! end of its batch interval.
//!
//! The listener is not background work to drain on shutdown: it holds only
//! a weak reference to the registry and ends when the registry is gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::Registry;
use crate::store::{CheckpointStore, Control};

/// How often a listener with nothing to do checks that its replica still exists.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Backoff between attempts to (re)subscribe while the store is away.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

pub fn spawn(store: Arc<dyn CheckpointStore>, streams: Weak<Registry>) {
    tokio::spawn(listen(store, streams));
}

async fn listen(store: Arc<dyn CheckpointStore>, streams: Weak<Registry>) {
    while streams.strong_count() > 0 {
        let mut requests = match store.control_requests().await {
            Ok(requests) => requests,
            Err(e) => {
                tracing::debug!(error = %e, "cannot subscribe to cancel requests; retrying");
                tokio::time::sleep(RESUBSCRIBE).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                request = requests.next() => {
                    let Some(request) = request else { break };
                    let Some(registry) = streams.upgrade() else { return };
                    match request {
                        Control::Cancel(id) => if let Some(hub) = registry.get(&id) {
                            tracing::info!(stream = %id, "cancel requested through another replica");
                            hub.cancel();
                        },
                        Control::Flush(id) => if let Some(hub) = registry.get(&id) {
                            hub.request_flush();
                        },
                    }
                }
                () = tokio::time::sleep(LIVENESS_CHECK) => {
                    if streams.strong_count() == 0 {
                        return;
                    }
                }
            }
        }
    }
}
