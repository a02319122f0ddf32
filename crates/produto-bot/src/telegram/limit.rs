//! Per-user rate limiting of chat commands: a token bucket per Telegram user, so that one
//! user typing fast (or a script) cannot monopolise the bot or the service.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Instant,
};

/// How many users' buckets are kept before full ones are forgotten.
const PRUNE_AT: usize = 10_000;

/// What the limiter decided about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// The first message over the limit since the last allowed one: tell the user once.
    DenyAndWarn,
    /// Over the limit again: drop it silently, so that a flood does not become a reply flood.
    Deny,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    warned: bool,
}

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl RateLimiter {
    /// `per_minute` commands a minute on average, `burst` at once. Zero `per_minute`: no limit.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, user: u64) -> Decision {
        self.check_at(user, Instant::now())
    }

    fn check_at(&self, user: u64, now: Instant) -> Decision {
        if self.per_second == 0.0 {
            return Decision::Allow;
        }
        // Nothing panics while the lock is held; should something, the map is still consistent.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < burst);
        }
        let bucket = buckets.entry(user).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            warned: false,
        });
        let refill = self.per_second * now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.warned = false;
            Decision::Allow
        } else if bucket.warned {
            Decision::Deny
        } else {
            bucket.warned = true;
            Decision::DenyAndWarn
        }
    }

    /// How long until `user` may send again (for logs).
    #[cfg(test)]
    fn refill_time(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(1.0 / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_one_warning_then_silence_until_refilled() {
        let limiter = RateLimiter::new(60, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at(1, start), Decision::Allow);
        }
        assert_eq!(limiter.check_at(1, start), Decision::DenyAndWarn);
        assert_eq!(limiter.check_at(1, start), Decision::Deny);
        // Another user has their own bucket.
        assert_eq!(limiter.check_at(2, start), Decision::Allow);
        // One token a second.
        let later = start + limiter.refill_time();
        assert_eq!(limiter.check_at(1, later), Decision::Allow);
        assert_eq!(limiter.check_at(1, later), Decision::DenyAndWarn);
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let limiter = RateLimiter::new(0, 1);
        for _ in 0..100 {
            assert_eq!(limiter.check(1), Decision::Allow);
        }
    }
}
