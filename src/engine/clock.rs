//! Where the engine reads the time. Every timestamp it writes (message
//! creation and expiry, leases, grace, status ages, audit times) and every
//! "is it due yet" it decides comes from one [`Clock`], so tests can move
//! time instead of sleeping through it. Timers (`tokio::time`) are not the
//! clock: they pace loops, and tests pause them separately.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that follows the wall clock, shifted by whatever tests add:
/// `advance` jumps it forward (grace running out, leases lapsing) while
/// the node keeps working in real time around it.
#[derive(Debug, Default)]
pub struct TestClock {
    offset: Mutex<Duration>,
}

impl TestClock {
    pub fn new() -> TestClock {
        TestClock::default()
    }

    /// Moves this clock `by` into the future (or the past, if negative).
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_clock_moves_when_told() {
        let c = TestClock::new();
        let before = c.now();
        c.advance(Duration::hours(2));
        let after = c.now();
        assert!(after - before >= Duration::hours(2));
        assert!(after - before < Duration::hours(2) + Duration::seconds(5));
        c.advance(Duration::hours(-2));
        assert!(c.now() - Utc::now() < Duration::seconds(1));
    }
}
