//! A bound on log lines a peer can cause: a flood of bad handshakes or refused requests must
//! not fill the disk. Lines over the bound are counted and summarised with the next line
//! that is logged; the metrics still count every event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `lines` lines per window (a second unless said otherwise).
pub struct LogLimit {
    lines: u32,
    length: Duration,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u32,
}

impl LogLimit {
    pub fn new(per_second: u32) -> LogLimit {
        LogLimit::per_window(per_second, Duration::from_secs(1))
    }

    /// At most `lines` lines per `length`: for events that come in floods but say the same
    /// thing each time (a host out of descriptors).
    pub fn per_window(lines: u32, length: Duration) -> LogLimit {
        LogLimit {
            lines,
            length,
            window: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Logs `line` for `listener` at `level` unless over the bound; a line that follows
    /// held-back ones is preceded by `listener "NAME": N {held_back}` (for example "more
    /// failed handshakes were not logged (see certgate_handshakes_total)").
    pub fn log(
        &self,
        level: tracing::Level,
        listener: &str,
        held_back: &str,
        line: std::fmt::Arguments<'_>,
    ) {
        let Some(count) = self.admit() else {
            return;
        };
        if count > 0 {
            tracing::warn!("listener \"{listener}\": {count} {held_back}");
        }
        if level == tracing::Level::ERROR {
            tracing::error!("listener \"{listener}\": {line}");
        } else {
            tracing::warn!("listener \"{listener}\": {line}");
        }
    }

    /// Whether a line may be logged now; `Some(n)` says how many were held back before it.
    pub fn admit(&self) -> Option<u32> {
        self.admit_at(Instant::now())
    }

    /// [`admit`](Self::admit) at `now`: the clock is an argument so that tests can step it.
    pub fn admit_at(&self, now: Instant) -> Option<u32> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut held_back = 0;
        if now.duration_since(window.started) >= self.length {
            held_back = window.suppressed;
            *window = Window {
                started: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if window.logged < self.lines {
            window.logged += 1;
            Some(held_back)
        } else {
            window.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_a_burst_then_counts_the_rest() {
        let limit = LogLimit::new(3);
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        // The burst: three lines, the first of a window with nothing held back before it.
        assert_eq!(limit.admit_at(at(0)), Some(0));
        assert_eq!(limit.admit_at(at(100)), Some(0));
        assert_eq!(limit.admit_at(at(200)), Some(0));
        // The rest of the second is held back, however many.
        assert_eq!((0..7).filter_map(|_| limit.admit_at(at(900))).count(), 0);
        // The next window admits again and says how many were held back, once.
        assert_eq!(limit.admit_at(at(1000)), Some(7));
        assert_eq!(limit.admit_at(at(1100)), Some(0));
        assert_eq!(limit.admit_at(at(1200)), Some(0));
        assert_eq!(limit.admit_at(at(1300)), None);
        // Every window counts afresh: one held back in the last, none in this one.
        assert_eq!(limit.admit_at(at(2000)), Some(1));
        assert_eq!(limit.admit_at(at(3000)), Some(0));
    }

    #[test]
    fn a_longer_window_holds_back_until_it_ends_and_then_says_how_many() {
        let limit = LogLimit::per_window(1, Duration::from_secs(10));
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(limit.admit_at(at(0)), Some(0));
        assert_eq!((0..5).filter_map(|_| limit.admit_at(at(9))).count(), 0);
        assert_eq!(limit.admit_at(at(10)), Some(5));
        assert_eq!(limit.admit_at(at(11)), None);
    }
}
