//! Fault injection for tests (never in the shipped binary): a wrapper store
//! that fails calls by rule, after neon's `UnreliableWrapper`. A rule
//! matches an operation and a key substring, can skip its first N matches
//! and fire a limited number of times, and injects one fault.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ETag, Object, ObjectStore, PutMode, PutOptions, StoreError, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Any,
    Get,
    Put,
    List,
    Delete,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// A retryable backend error (a timeout, a 503).
    Transient,
    /// A non-retryable backend error (access denied).
    Permanent,
    /// The call succeeds after a delay.
    Latency(Duration),
    /// The calls this rule matches are made one at a time, each taking this
    /// long (a server that serves one request at a time).
    Serial(Duration),
    /// The write lands but its reply is lost: a retryable error after success.
    Ambiguous,
    /// A read returns these bytes instead of the object.
    Garbage(Bytes),
    /// A compare-and-swap with the current ETag is refused (a store that
    /// mishandles If-Match).
    RefuseSwap,
    /// Another writer changes the object just before each compare-and-swap.
    ConcurrentWriter,
}

pub struct Rule {
    op: Op,
    pattern: String,
    skip: u64,
    times: Option<u64>,
    fault: Fault,
    seen: AtomicU64,
    fired: AtomicU64,
    enabled: AtomicBool,
}

impl Rule {
    fn new(op: Op, pattern: &str) -> Rule {
        Rule {
            op,
            pattern: pattern.to_string(),
            skip: 0,
            times: None,
            fault: Fault::Transient,
            seen: AtomicU64::new(0),
            fired: AtomicU64::new(0),
            enabled: AtomicBool::new(true),
        }
    }
    /// Every call whose key (or list prefix) contains `pattern` ("" matches all).
    pub fn any(pattern: &str) -> Rule {
        Rule::new(Op::Any, pattern)
    }
    pub fn gets(pattern: &str) -> Rule {
        Rule::new(Op::Get, pattern)
    }
    pub fn puts(pattern: &str) -> Rule {
        Rule::new(Op::Put, pattern)
    }
    pub fn lists(pattern: &str) -> Rule {
        Rule::new(Op::List, pattern)
    }
    pub fn fault(mut self, fault: Fault) -> Rule {
        self.fault = fault;
        self
    }
    /// Lets the first `n` matching calls through.
    pub fn after(mut self, n: u64) -> Rule {
        self.skip = n;
        self
    }
    /// Fires at most `n` times.
    pub fn times(mut self, n: u64) -> Rule {
        self.times = Some(n);
        self
    }

    /// How often it fired.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }
    pub fn disable(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    fn fires(&self, op: Op, key: &str) -> bool {
        if !self.enabled.load(Ordering::SeqCst)
            || !(self.op == Op::Any || self.op == op)
            || !key.contains(&self.pattern)
        {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n < self.skip || self.times.is_some_and(|t| self.fired.load(Ordering::SeqCst) >= t) {
            return false;
        }
        self.fired.fetch_add(1, Ordering::SeqCst);
        true
    }
}

pub struct FaultyStore<S> {
    inner: S,
    rules: Mutex<Vec<Arc<Rule>>>,
    /// Held by the call a `Serial` fault is making.
    serial: tokio::sync::Mutex<()>,
    /// Calls a `Serial` fault made wait for another.
    queued: AtomicU64,
}

impl<S: ObjectStore> FaultyStore<S> {
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore { inner, rules: Mutex::new(Vec::new()), serial: Default::default(), queued: AtomicU64::new(0) }
    }

    /// How many calls a `Serial` fault made wait for another.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Adds a rule; the handle reports how often it fired and can disable it.
    pub fn add(&self, rule: Rule) -> Arc<Rule> {
        let rule = Arc::new(rule);
        self.rules.lock().expect("lock").push(rule.clone());
        rule
    }

    pub fn clear(&self) {
        self.rules.lock().expect("lock").clear();
    }

    fn fault_for(&self, op: Op, key: &str) -> Option<Fault> {
        let rules = self.rules.lock().expect("lock").clone();
        rules.iter().find(|r| r.fires(op, key)).map(|r| r.fault.clone())
    }

    fn error(&self, key: &str, retryable: bool) -> StoreError {
        StoreError::Backend {
            store: self.inner.describe(),
            message: format!("injected {} fault on {key}", if retryable { "transient" } else { "permanent" }),
            retryable,
        }
    }

    /// Faults that apply to any operation the same way.
    async fn common(&self, fault: &Fault, key: &str) -> StoreResult<()> {
        match fault {
            Fault::Transient => Err(self.error(key, true)),
            Fault::Permanent => Err(self.error(key, false)),
            Fault::Latency(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Fault::Serial(d) => {
                let _one = match self.serial.try_lock() {
                    Ok(g) => g,
                    Err(_) => {
                        self.queued.fetch_add(1, Ordering::SeqCst);
                        self.serial.lock().await
                    }
                };
                tokio::time::sleep(*d).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    async fn get(&self, key: &str) -> StoreResult<Option<Object>> {
        let fault = self.fault_for(Op::Get, key);
        if let Some(f) = &fault {
            self.common(f, key).await?;
        }
        let got = self.inner.get(key).await?;
        match fault {
            Some(Fault::Garbage(bytes)) => Ok(got.map(|o| Object { bytes, etag: o.etag })),
            _ => Ok(got),
        }
    }

    async fn put(&self, key: &str, bytes: Bytes, opts: PutOptions) -> StoreResult<ETag> {
        let Some(fault) = self.fault_for(Op::Put, key) else { return self.inner.put(key, bytes, opts).await };
        self.common(&fault, key).await?;
        match (fault, &opts.mode) {
            (Fault::Ambiguous, _) => {
                self.inner.put(key, bytes, opts).await?;
                Err(self.error(key, true))
            }
            (Fault::RefuseSwap, PutMode::Update(_)) => Err(StoreError::Conflict { key: key.into() }),
            (Fault::ConcurrentWriter, PutMode::Update(_)) => {
                let other = Bytes::from(format!("another writer {}", uuid::Uuid::new_v4()));
                self.inner.put(key, other, PutOptions::overwrite()).await?;
                self.inner.put(key, bytes, opts).await
            }
            _ => self.inner.put(key, bytes, opts).await,
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        if let Some(f) = self.fault_for(Op::List, prefix) {
            self.common(&f, prefix).await?;
        }
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        if let Some(f) = self.fault_for(Op::Delete, key) {
            self.common(&f, key).await?;
        }
        self.inner.delete(key).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
