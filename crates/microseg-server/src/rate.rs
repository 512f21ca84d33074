//! Per-key rate limits: a token bucket per write key (`[server] key_requests_per_second`,
//! `key_burst`). Buckets exist only for valid keys, so their number is bounded by the
//! keys in the store, not by what clients send.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The buckets of every key that sent something.
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `rate` requests per second sustained, `burst` at once.
    pub(crate) fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                f64::INFINITY
            },
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one request's token from `key`'s bucket at `now`; when it is empty, the
    /// whole seconds to wait for the next token.
    pub(crate) fn take(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().expect("rate lock");
        // The key is copied once, for its first request (not on every request).
        if !buckets.contains_key(key) {
            let full = Bucket {
                tokens: self.burst,
                at: now,
            };
            buckets.insert(key.to_string(), full);
        }
        let bucket = buckets.get_mut(key).expect("inserted above");
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }

    /// The sustained rate and the burst, for messages.
    pub(crate) fn describe(&self) -> (f64, f64) {
        (self.rate, self.burst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Hand count: burst 3 at 2 per second: three at once, the fourth waits half a second
    /// (1 s rounded up), after 0.5 s one more, after 10 s never more than the burst.
    #[test]
    fn a_bucket_allows_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take("k", t0), Ok(()));
        }
        assert_eq!(limiter.take("k", t0), Err(1));
        assert_eq!(
            limiter.take("other", t0),
            Ok(()),
            "each key has its own bucket"
        );
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.take("k", t1), Ok(()));
        assert_eq!(limiter.take("k", t1), Err(1));
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(limiter.take("k", t2), Ok(()));
        }
        assert_eq!(limiter.take("k", t2), Err(1));
        // A slow rate says how long to wait.
        let slow = RateLimiter::new(0.1, 1);
        assert_eq!(slow.take("k", t0), Ok(()));
        assert_eq!(slow.take("k", t0), Err(10));
    }
}
