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

    /// Whether a line may be logged now; `Some(n)` says how many were held back before it.
    pub fn admit(&self) -> Option<u32> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
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
        let admitted = (0..10).filter(|_| limit.admit().is_some()).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn a_longer_window_holds_back_until_it_ends_and_then_says_how_many() {
        let limit = LogLimit::per_window(1, Duration::from_millis(200));
        assert_eq!(limit.admit(), Some(0));
        assert_eq!((0..5).filter(|_| limit.admit().is_some()).count(), 0);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limit.admit(), Some(5));
    }
}
