//! How fast one connection (comet WebSocket, SIP over WebSocket) may send (sans-IO: time is an
//! argument).
//!
//! A token bucket: `per_second` frames a second on average, bursts of up to `burst`. A
//! connection that has used its bucket up is not refused or closed: its next frame is read
//! only once the bucket has refilled enough, so a page that subscribes to twenty pipes at
//! once is not slowed, and a script that floods `web_pipe2` (each one fans out to every
//! subscriber of the pipe), `pipe_log` (a store read each) or SIP REGISTERs (a digest and a
//! store read each) gets `per_second` of them and TCP's flow control for the rest.
//!
//! The same bucket is each client address's allowance of failed logins
//! ([`crate::admission::Gate::may_authenticate`]): one token per failure, none left means
//! refused until [`Throttle::wait`] has passed.

use std::time::{Duration, Instant};

/// `[ws] commands_per_second` and `[ws] command_burst` (their defaults are in the config's
/// key table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommandRate {
    /// Frames per second, on average (more than 0).
    pub per_second: f64,
    /// Frames that may come at once (at least 1).
    pub burst: f64,
}

/// One connection's bucket.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate: CommandRate,
    tokens: f64,
    at: Instant,
}

impl Throttle {
    /// A full bucket at `now`.
    pub fn new(rate: CommandRate, now: Instant) -> Self {
        Throttle {
            rate,
            tokens: rate.burst,
            at: now,
        }
    }

    /// The tokens at `now` (refilled since the last charge, at most `burst`).
    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst)
    }

    /// How long from `now` until a whole token is there (`None`: one is), without taking it.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        let tokens = self.tokens_at(now);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.rate.per_second))
    }

    /// Whether the bucket has refilled completely by `now` (it is as good as a new one).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.rate.burst
    }

    /// Counts one frame read at `now`. `None`: read the next one when it comes; `Some(t)`:
    /// read nothing more before `t`.
    pub fn charge(&mut self, now: Instant) -> Option<Instant> {
        self.tokens = self.tokens_at(now) - 1.0;
        self.at = self.at.max(now);
        if self.tokens >= 0.0 {
            None
        } else {
            // Until the bucket is back at zero: a whole token at most.
            let wait = -self.tokens / self.rate.per_second;
            Some(self.at + Duration::from_secs_f64(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_passes_then_frames_come_at_the_rate() {
        let t0 = Instant::now();
        let mut t = Throttle::new(
            CommandRate {
                per_second: 10.0,
                burst: 5.0,
            },
            t0,
        );
        for i in 0..5 {
            assert_eq!(t.charge(t0), None, "frame {i} of the burst");
        }
        // The sixth at once waits for a tenth of a second of refill.
        let until = t.charge(t0).expect("the bucket is empty");
        assert_eq!(until, t0 + ms(100));
        // Read exactly when told: one more token has come, and it is spent.
        let next = t.charge(until).expect("one token came and went");
        assert_eq!(next, t0 + ms(200));
        // Over a long run a reader that waits when told gets `per_second`.
        let mut now = next;
        let mut read = 0;
        while now < t0 + ms(200) + Duration::from_secs(10) {
            read += 1;
            now = t.charge(now).unwrap_or(now);
        }
        assert_eq!(read, 100);
    }

    #[test]
    fn an_idle_connection_refills_up_to_the_burst_only() {
        let t0 = Instant::now();
        let rate = CommandRate {
            per_second: 10.0,
            burst: 3.0,
        };
        let mut t = Throttle::new(rate, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(t.charge(later), None);
        }
        assert!(
            t.charge(later).is_some(),
            "an hour of silence is not 36000 frames"
        );
    }

    #[test]
    fn time_going_backwards_is_no_refill() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut t = Throttle::new(
            CommandRate {
                per_second: 1.0,
                burst: 1.0,
            },
            t0,
        );
        assert_eq!(t.charge(t0), None);
        let until = t.charge(t0 - ms(500)).expect("empty");
        assert_eq!(until, t0 + Duration::from_secs(1));
    }
}
