//! A per-supplier circuit breaker: `failures` consecutive faults open it for
//! `open` (requests fail at once with 503, sparing the supplier and our
//! workers); then one trial request is let through (half-open): success
//! closes it, a fault opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    HalfOpen,
    Open,
}

impl State {
    /// The `fhirbridge_supplier_circuit_state` gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial is in flight.
    HalfOpen,
}

/// Whether an admitted call is the half-open trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trial(bool);

pub struct Breaker {
    threshold: u32,
    open: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(threshold: u32, open: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    /// `Ok` when a call may go out; `Err(wait)` while open.
    pub fn admit(&self) -> Result<Trial, Duration> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &*g {
            Inner::Closed { .. } => Ok(Trial(false)),
            Inner::Open { until } => {
                let now = Instant::now();
                if now >= *until {
                    *g = Inner::HalfOpen;
                    Ok(Trial(true))
                } else {
                    Err(*until - now)
                }
            }
            Inner::HalfOpen => Err(Duration::from_secs(1)),
        }
    }

    pub fn success(&self, _trial: Trial) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = Inner::Closed { failures: 0 };
    }

    pub fn failure(&self, trial: Trial) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let open = Inner::Open {
            until: Instant::now() + self.open,
        };
        *g = match &*g {
            _ if trial.0 => open,
            Inner::HalfOpen => open,
            Inner::Closed { failures } if failures + 1 >= self.threshold => open,
            Inner::Closed { failures } => Inner::Closed {
                failures: failures + 1,
            },
            Inner::Open { until } => Inner::Open { until: *until },
        };
    }

    pub fn state(&self) -> State {
        match &*self.inner.lock().unwrap_or_else(|p| p.into_inner()) {
            Inner::Closed { .. } => State::Closed,
            Inner::HalfOpen => State::HalfOpen,
            Inner::Open { .. } => State::Open,
        }
    }

    /// How long it stays open (`None` when not open).
    pub fn open_for(&self) -> Option<Duration> {
        match &*self.inner.lock().unwrap_or_else(|p| p.into_inner()) {
            Inner::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    pub fn health(&self) -> &'static str {
        match &*self.inner.lock().unwrap_or_else(|p| p.into_inner()) {
            Inner::Closed { failures: 0 } => "up",
            Inner::Closed { .. } | Inner::HalfOpen => "degraded",
            Inner::Open { .. } => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_trial() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            let t = b.admit().unwrap();
            b.failure(t);
        }
        assert_eq!(b.health(), "degraded");
        let t = b.admit().unwrap();
        b.failure(t);
        assert_eq!(b.state(), State::Open);
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(60));
        let t = b.admit().unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.admit().is_err(), "one trial at a time");
        b.failure(t);
        assert_eq!(b.state(), State::Open);
        std::thread::sleep(Duration::from_millis(60));
        let t = b.admit().unwrap();
        b.success(t);
        assert_eq!(b.health(), "up");
    }
}
