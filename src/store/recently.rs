//! What this replica wrote to Redis a short while ago, by key: a write whose
//! effect lasts (an index pruned, a session listed) need not ride on every
//! request. Bounded: past its size the memory is dropped, and the next
//! writes go out again. Forgetting costs a command, never a result.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) struct Recently {
    written: Mutex<HashMap<String, Instant>>,
    max_keys: usize,
}

impl Recently {
    pub(super) fn new(max_keys: usize) -> Recently {
        Recently {
            written: Mutex::new(HashMap::new()),
            max_keys,
        }
    }

    /// True when `key` was noted less than `within` ago.
    pub(super) fn within(&self, key: &str, within: Duration) -> bool {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.get(key).is_some_and(|at| at.elapsed() < within)
    }

    /// Notes `key` as written now.
    pub(super) fn note(&self, key: &str) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if written.len() >= self.max_keys && !written.contains_key(key) {
            written.clear();
        }
        match written.get_mut(key) {
            Some(at) => *at = Instant::now(),
            None => {
                written.insert(key.to_owned(), Instant::now());
            }
        }
    }

    /// True, and `key` noted now, when it was not noted within `within`:
    /// the caller writes it.
    pub(super) fn due(&self, key: &str, within: Duration) -> bool {
        if self.within(key, within) {
            return false;
        }
        self.note(key);
        true
    }

    /// Drops what is known of `key`: its next write goes out.
    pub(super) fn forget(&self, key: &str) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_once_per_interval() {
        let recently = Recently::new(10);
        let minute = Duration::from_secs(60);
        assert!(recently.due("a", minute));
        assert!(!recently.due("a", minute));
        assert!(recently.within("a", minute));
        assert!(
            recently.due("a", Duration::ZERO),
            "an interval of 0 never holds"
        );
        recently.forget("a");
        assert!(!recently.within("a", minute));
    }

    #[test]
    fn past_its_size_it_forgets_rather_than_grows() {
        let recently = Recently::new(2);
        let minute = Duration::from_secs(60);
        recently.note("a");
        recently.note("b");
        recently.note("b");
        assert!(
            recently.within("a", minute),
            "noting a known key adds nothing"
        );
        recently.note("c");
        assert!(!recently.within("a", minute) && !recently.within("b", minute));
        assert!(recently.within("c", minute));
    }
}
