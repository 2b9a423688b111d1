//! RFC 3339 times with microseconds (`2026-12-07T14:00:00.123456Z`), as
//! `humantime::format_rfc3339_micros` writes them, for the two places that
//! write one on every request: the stored messages' `timestamp` and the
//! access line. A worker thread keeps the date and time of the last second
//! it wrote, so most calls only write the six digits of the microseconds:
//! through humantime's calendar and `fmt` each cost about 650 instructions.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes in `YYYY-MM-DDTHH:MM:SS`.
const SECOND: usize = 19;

/// One time, written out: `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
#[derive(Clone, Copy)]
pub struct Rfc3339([u8; SECOND + 8]);

impl Rfc3339 {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever written into it.
        std::str::from_utf8(&self.0).expect("an RFC 3339 time is ASCII")
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

thread_local! {
    /// The last second this thread wrote (seconds since the epoch), and
    /// how it reads. `u64::MAX` names no second.
    static LAST_SECOND: Cell<(u64, [u8; SECOND])> = const { Cell::new((u64::MAX, [0; SECOND])) };
}

/// `time` in UTC with microseconds; a time before the epoch is the epoch.
pub fn rfc3339_micros(time: SystemTime) -> Rfc3339 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let second = LAST_SECOND.with(|last| match last.get() {
        (known, text) if known == seconds => text,
        _ => {
            let mut text = [0; SECOND];
            let whole = humantime::format_rfc3339_seconds(UNIX_EPOCH + since).to_string();
            text.copy_from_slice(&whole.as_bytes()[..SECOND]);
            last.set((seconds, text));
            text
        }
    });
    let mut out = [0; SECOND + 8];
    out[..SECOND].copy_from_slice(&second);
    out[SECOND] = b'.';
    let mut micros = since.subsec_micros();
    for digit in out[SECOND + 1..SECOND + 7].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out[SECOND + 7] = b'Z';
    Rfc3339(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn writes_what_humantime_writes(
            // Up to the last second of 9999, humantime's limit.
            seconds in 0u64..253_402_300_800,
            nanos in 0u32..1_000_000_000,
            again in 0u32..1_000_000_000,
        ) {
            let time = UNIX_EPOCH + Duration::new(seconds, nanos);
            prop_assert_eq!(
                rfc3339_micros(time).to_string(),
                humantime::format_rfc3339_micros(time).to_string()
            );
            // The same second again: from this thread's memory of it.
            let same_second = UNIX_EPOCH + Duration::new(seconds, again);
            prop_assert_eq!(
                rfc3339_micros(same_second).to_string(),
                humantime::format_rfc3339_micros(same_second).to_string()
            );
        }
    }

    #[test]
    fn a_time_before_the_epoch_is_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(
            rfc3339_micros(before).as_str(),
            "1970-01-01T00:00:00.000000Z"
        );
    }
}
