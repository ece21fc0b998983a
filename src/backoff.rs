//! The one retry policy: exponential backoff with jitter (backon's), from
//! `min` doubling to `max`. Every retry loop takes its pauses from here;
//! each bounds its own attempts and time, and decides what is worth another
//! attempt (store calls go through `store::retry`, on the same builder).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The pauses between attempts, without end (the caller bounds the loop).
pub fn pauses(min: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    builder(min, max).without_max_times().build()
}

/// At most `times` pauses.
pub fn pauses_at_most(min: Duration, max: Duration, times: usize) -> impl Iterator<Item = Duration> + Send {
    builder(min, max).with_max_times(times).build()
}

/// The builder behind every pause (store calls add their attempt and time budget to it).
pub fn builder(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default().with_min_delay(min).with_max_delay(max).with_jitter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_vary() {
        let a: Vec<Duration> = pauses(Duration::from_millis(10), Duration::from_millis(80)).take(8).collect();
        assert!(a[0] >= Duration::from_millis(10) && a[0] < Duration::from_millis(20), "{a:?}");
        assert!(a.iter().all(|d| *d < Duration::from_millis(160)), "capped (with jitter): {a:?}");
        assert_eq!(pauses_at_most(Duration::from_millis(1), Duration::from_millis(2), 3).count(), 3);
        let b: Vec<Duration> = pauses(Duration::from_millis(10), Duration::from_millis(80)).take(8).collect();
        assert_ne!(a, b, "jittered: racing writers spread out");
    }
}
