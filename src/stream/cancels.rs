//! Listens for requests broadcast through the checkpoint store to the
//! replica that reads a stream's upstream: a cancel (`DELETE
//! /tether/streams/{id}` answered by any replica) reaches it at once (a
//! missed one, say during a Redis restart, is caught by the owner's next
//! heartbeat), and a flush (a reader on another replica is about to follow
//! the stream) makes its checkpoint writer write at once instead of at the
//! end of its batch interval.
//!
//! The listener keeps a [`ControlLink`]: a writer whose replica has been
//! subscribed without a break since its stream began has heard every cancel
//! for it, and need not ask the store at its heartbeat.
//!
//! The listener is not background work to drain on shutdown: it holds only
//! a weak reference to the registry and ends when the registry is gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::Registry;
use crate::store::{CheckpointStore, Control};

/// How often a listener with nothing to do checks that its replica still exists.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// Backoff between attempts to (re)subscribe while the store is away.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// Whether this replica's subscription to control requests has been up
/// without a break since a [`mark`](ControlLink::mark): a generation
/// counter, odd while subscribed, moved on at every subscribe and every loss.
#[derive(Debug, Default)]
pub struct ControlLink {
    generation: AtomicU64,
}

impl ControlLink {
    /// Where the link is now, to compare with later.
    pub fn mark(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True when the link was up at `mark` and has not broken since: every
    /// request broadcast meanwhile has been heard.
    pub fn unbroken_since(&self, mark: u64) -> bool {
        mark % 2 == 1 && self.mark() == mark
    }

    fn set(&self, up: bool) {
        let _ = self
            .generation
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                ((g % 2 == 1) != up).then_some(g + 1)
            });
    }
}

pub fn spawn(store: Arc<dyn CheckpointStore>, streams: Weak<Registry>, link: Arc<ControlLink>) {
    tokio::spawn(listen(store, streams, link));
}

async fn listen(store: Arc<dyn CheckpointStore>, streams: Weak<Registry>, link: Arc<ControlLink>) {
    while streams.strong_count() > 0 {
        let mut requests = match store.control_requests().await {
            Ok(requests) => {
                link.set(true);
                requests
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot subscribe to cancel requests; retrying");
                tokio::time::sleep(RESUBSCRIBE).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                request = requests.next() => {
                    let Some(request) = request else {
                        link.set(false);
                        break;
                    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_unbroken_only_while_it_stays_up() {
        let link = ControlLink::default();
        assert!(!link.unbroken_since(link.mark()), "down at first");
        link.set(true);
        let up = link.mark();
        assert!(link.unbroken_since(up));
        link.set(true);
        assert!(link.unbroken_since(up), "a repeated up is no break");
        link.set(false);
        link.set(true);
        assert!(!link.unbroken_since(up), "lost and made again since");
        assert!(link.unbroken_since(link.mark()));
    }
}
