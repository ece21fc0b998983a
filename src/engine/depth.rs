//! How many journal writes a run keeps in flight, learned from the store.
//!
//! A second write in flight pays where the store makes writes in parallel
//! (S3 across a network): the events that arrive during a write are on their
//! way before it is made. Where the store makes one write at a time (a
//! disk's fsyncs, a single-threaded S3-compatible server), a second write
//! only queues behind the first, takes about twice as long, and splits the
//! batches into more writes. So a run times its writes: those started with
//! none in flight ("alone") and those started beside another. It keeps two
//! in flight while a write beside another is made in less than
//! `PARALLEL_BELOW` × the time of one alone (medians of the last `WINDOW`
//! of each), and one otherwise. Every `PROBE_EVERY` writes (the first time
//! after `FIRST_PROBE`) it tries the other depth for a few writes, so both
//! figures stay current when the store's behaviour changes.

use std::time::Duration;

/// Writes between probes of the depth not in use.
const PROBE_EVERY: u64 = 128;
/// Writes a probe lasts (a probe of one write in flight slows a busy
/// journal on a store that makes writes in parallel, so probes are short).
const PROBE_LEN: u64 = 2;
/// Writes before the first probe, and its length: a run decides early.
const FIRST_PROBE: u64 = 12;
const FIRST_PROBE_LEN: u64 = 8;
/// Two in flight while a write beside another takes less than this many
/// times one alone. With the journal busy, an event waits about 1.5 × a
/// write alone with one in flight, and about 1.25 × a write beside another
/// with two: two are quicker below 1.2, and about even up to 1.25.
const PARALLEL_BELOW: f64 = 1.25;
/// Samples of each kind before the depth is chosen by them.
const SAMPLES: usize = 6;

/// The last `WINDOW` write times of one kind; their median, so that one
/// slow write (a retry, a hiccup) does not change the depth.
#[derive(Debug, Default)]
struct Times {
    ms: std::collections::VecDeque<f64>,
}

const WINDOW: usize = 16;

impl Times {
    fn add(&mut self, ms: f64) {
        if self.ms.len() == WINDOW {
            self.ms.pop_front();
        }
        self.ms.push_back(ms);
    }

    fn median(&self) -> f64 {
        let mut v: Vec<f64> = self.ms.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    }
}

#[derive(Debug)]
pub struct Depth {
    alone: Times,
    beside: Times,
    /// The store was seen to make writes in parallel (or nothing is known yet).
    two: bool,
    /// Writes started; the next probe is writes `probe.0` up to `probe.1`.
    started: u64,
    probe: (u64, u64),
}

impl Default for Depth {
    fn default() -> Self {
        Depth {
            alone: Times::default(),
            beside: Times::default(),
            two: true,
            started: 0,
            probe: (FIRST_PROBE, FIRST_PROBE + FIRST_PROBE_LEN),
        }
    }
}

impl Depth {
    /// Writes that may be in flight now (1 or 2).
    pub fn limit(&self) -> usize {
        let probing = (self.probe.0..self.probe.1).contains(&self.started);
        if self.two != probing { 2 } else { 1 }
    }

    /// A write started.
    pub fn started(&mut self) {
        self.started += 1;
        if self.started >= self.probe.1 {
            let next = self.started + PROBE_EVERY;
            self.probe = (next, next + PROBE_LEN);
        }
    }

    /// A write was made in `took`; `beside`: it started while another was
    /// in flight. Whether this changed the depth, with the medians (ms,
    /// alone and beside).
    pub fn made(&mut self, beside: bool, took: Duration) -> Option<(usize, f64, f64)> {
        let ms = took.as_secs_f64() * 1e3;
        if beside {
            self.beside.add(ms)
        } else {
            self.alone.add(ms)
        }
        if self.alone.ms.len() < SAMPLES || self.beside.ms.len() < SAMPLES {
            return None;
        }
        let (alone, beside) = (self.alone.median(), self.beside.median());
        let two = beside < PARALLEL_BELOW * alone;
        if two == std::mem::replace(&mut self.two, two) {
            return None;
        }
        // A probe in progress has found what it was for.
        let next = self.started + PROBE_EVERY;
        self.probe = (next, next + PROBE_LEN);
        Some((if two { 2 } else { 1 }, alone, beside))
    }

    /// Whether the store was seen to make writes in parallel.
    #[cfg(test)]
    fn parallel(&self) -> bool {
        self.two
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` writes: each starts beside another when the limit allows
    /// (the journal is busy), and takes `alone` or `beside` ms.
    fn run(d: &mut Depth, n: u64, alone: u64, beside: u64) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let limit = d.limit();
                d.started();
                let two = limit == 2;
                d.made(two, Duration::from_millis(if two { beside } else { alone }));
                limit
            })
            .collect()
    }

    /// Writes from one probe's start to the next's.
    const CYCLE: u64 = PROBE_EVERY + PROBE_LEN;

    #[test]
    fn two_in_flight_until_the_store_is_known() {
        let d = Depth::default();
        assert_eq!(d.limit(), 2);
        assert!(d.parallel());
    }

    #[test]
    fn a_store_that_makes_one_write_at_a_time_gets_one() {
        let mut d = Depth::default();
        // A busy journal at two in flight: only the probe writes go alone.
        let limits = run(&mut d, FIRST_PROBE + FIRST_PROBE_LEN, 10, 20);
        assert!(limits[..FIRST_PROBE as usize].iter().all(|&l| l == 2));
        assert!(limits[FIRST_PROBE as usize..].iter().all(|&l| l == 1), "the probe: {limits:?}");
        assert!(!d.parallel());
        // From now on one, but for the probes of two.
        let limits = run(&mut d, 3 * CYCLE, 10, 20);
        let two = limits.iter().filter(|&&l| l == 2).count();
        assert_eq!(two, 3 * PROBE_LEN as usize, "{limits:?}");
        assert!(!d.parallel());
    }

    #[test]
    fn a_store_that_makes_writes_in_parallel_keeps_two() {
        let mut d = Depth::default();
        let limits = run(&mut d, FIRST_PROBE + FIRST_PROBE_LEN + 4 * CYCLE, 30, 33);
        let one = limits.iter().filter(|&&l| l == 1).count();
        assert_eq!(one, (FIRST_PROBE_LEN + 4 * PROBE_LEN) as usize, "only the probes go alone: {limits:?}");
        assert!(d.parallel());
    }

    #[test]
    fn the_depth_follows_the_store_when_it_changes() {
        let mut d = Depth::default();
        run(&mut d, 2 * CYCLE, 10, 20);
        assert!(!d.parallel());
        // The store now makes writes in parallel: the probes of two show it.
        run(&mut d, 8 * CYCLE, 10, 10);
        assert!(d.parallel());
        assert_eq!(d.limit(), 2);
        // And back.
        run(&mut d, 2 * CYCLE, 10, 20);
        assert!(!d.parallel());
    }

    #[test]
    fn one_slow_write_does_not_flip_the_depth() {
        let mut d = Depth::default();
        run(&mut d, 2 * CYCLE, 30, 31);
        assert!(d.parallel());
        d.made(true, Duration::from_millis(200));
        d.made(true, Duration::from_millis(200));
        assert!(d.parallel(), "{d:?}");
    }
}
