//! A bound on log lines a peer can cause: a flood of bad handshakes or refused requests must
//! not fill the disk. Lines over the bound are counted and summarised with the next line
//! that is logged; the metrics still count every event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `per_second` lines a second.
pub struct LogLimit {
    per_second: u32,
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    logged: u32,
    suppressed: u32,
}

impl LogLimit {
    pub fn new(per_second: u32) -> LogLimit {
        LogLimit {
            per_second,
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
        if now.duration_since(window.started) >= Duration::from_secs(1) {
            held_back = window.suppressed;
            *window = Window {
                started: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if window.logged < self.per_second {
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
}
