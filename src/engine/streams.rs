//! Places for long-lived streams (`Watch`, `logs --follow`). Each holds a
//! task and a store poll, so a server serves at most `MAX_WATCHES` at once;
//! and so that no caller can take them all from the people running an
//! incident, each named caller gets at most a quarter, and viewers
//! together at most half: whatever viewers hold, half the places stay for
//! operators and admins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Streams one server serves at once.
pub const MAX_WATCHES: usize = 512;
/// Streams one caller (one token) may hold.
pub const PER_CALLER: usize = MAX_WATCHES / 4;
/// Streams all viewers together may hold.
pub const VIEWERS: usize = MAX_WATCHES / 2;

/// Who asks for a stream. Without tokens every caller is anonymous and
/// only the server-wide limit applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCaller {
    /// The token's name; empty when authentication is off.
    pub name: String,
    /// The token has the viewer role only.
    pub viewer: bool,
}

#[derive(Default)]
struct Counts {
    total: usize,
    viewers: usize,
    per_caller: HashMap<String, usize>,
}

#[derive(Default)]
pub struct StreamSlots {
    counts: Mutex<Counts>,
}

/// A stream's place, given back when the stream ends.
pub struct StreamPermit {
    slots: Arc<StreamSlots>,
    caller: StreamCaller,
}

impl StreamSlots {
    pub fn acquire(self: &Arc<Self>, caller: &StreamCaller, what: &str) -> Result<StreamPermit> {
        let mut c = self.counts.lock().expect("lock");
        let mine = c.per_caller.get(&caller.name).copied().unwrap_or(0);
        let refused = if c.total >= MAX_WATCHES {
            Some(format!("this server already serves {MAX_WATCHES} streams (runs watched, logs followed)"))
        } else if !caller.name.is_empty() && mine >= PER_CALLER {
            Some(format!(
                "{} already holds {PER_CALLER} streams, its share of this server's {MAX_WATCHES}",
                caller.name
            ))
        } else if caller.viewer && c.viewers >= VIEWERS {
            Some(format!("viewers already hold {VIEWERS} streams, their share of this server's {MAX_WATCHES}"))
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(Error::ResourceExhausted(format!("{why}; try again later, or {what}")));
        }
        c.total += 1;
        if caller.viewer {
            c.viewers += 1;
        }
        if !caller.name.is_empty() {
            *c.per_caller.entry(caller.name.clone()).or_default() += 1;
        }
        Ok(StreamPermit { slots: self.clone(), caller: caller.clone() })
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut c = self.slots.counts.lock().expect("lock");
        c.total -= 1;
        if self.caller.viewer {
            c.viewers -= 1;
        }
        if !self.caller.name.is_empty()
            && let Some(n) = c.per_caller.get_mut(&self.caller.name)
        {
            *n -= 1;
            if *n == 0 {
                c.per_caller.remove(&self.caller.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str, viewer: bool) -> StreamCaller {
        StreamCaller { name: name.into(), viewer }
    }

    #[test]
    fn a_caller_gets_its_share_and_viewers_leave_room_for_operators() {
        let slots = Arc::new(StreamSlots::default());
        let mut held = Vec::new();
        for i in 0..PER_CALLER {
            held.push(slots.acquire(&who("ci", true), "x").unwrap_or_else(|e| panic!("{i}: {e}")));
        }
        let e = slots.acquire(&who("ci", true), "use run show").err().unwrap().to_string();
        assert!(e.contains("ci already holds 128 streams") && e.ends_with("use run show"), "{e}");
        // Two viewers fill the viewers' share; a third is refused, an operator is not.
        for _ in 0..PER_CALLER {
            held.push(slots.acquire(&who("v3", true), "x").unwrap());
        }
        let e = slots.acquire(&who("v4", true), "x").err().unwrap().to_string();
        assert!(e.contains("viewers already hold 256"), "{e}");
        let op = slots.acquire(&who("oncall", false), "x").unwrap();
        // A stream that ends gives its place back.
        held.truncate(held.len() - 1);
        slots.acquire(&who("v3", true), "x").unwrap();
        drop(op);
        // Anonymous callers (no tokens) share the server-wide limit only.
        let slots = Arc::new(StreamSlots::default());
        let anon: Vec<_> = (0..MAX_WATCHES).map(|_| slots.acquire(&StreamCaller::default(), "x").unwrap()).collect();
        assert!(slots.acquire(&StreamCaller::default(), "x").is_err());
        drop(anon);
        assert!(slots.acquire(&StreamCaller::default(), "x").is_ok());
    }
}
