//! A run's append-only journal: objects written create-if-absent, each
//! holding one entry or a batch of consecutive entries (events that arrived
//! together are written together, so a busy run does not pay one store round
//! trip or fsync per event).
//!
//! Objects sit at *slots* (the number in their key). An object's entries
//! follow the previous object's, and its slot is the previous object's slot
//! plus its length, except after a fence (below). A writer may have two
//! objects in flight at once, acknowledging them in order, so a crash can
//! leave the first missing and the second written: readers treat one object
//! past a missing slot as never written, more than one as a gap (an
//! integrity error).
//!
//! The slot doubles as a fence: every writer appends right after the last
//! object it knows, so a stale owner's next write collides with the new
//! owner's and fails. The first object an owner writes after reading the
//! journal (`Journal::open`) is a fence object: it names the slot of the next
//! object, past the `MAX_BATCH` slots after it, and leaves those to the late
//! second write of an earlier owner (at most `MAX_BATCH` past its first),
//! which nobody ever reads.

use bytes::Bytes;

use crate::domain::run::{ENTRY_FORMAT, Entry, Event};
use crate::domain::snapshot::IntegrityError;
use crate::error::{Error, Result};
use crate::store::codec::{self, Persisted};
use crate::store::{DynStore, PutOptions, StoreError, layout};

impl Persisted for Entry {
    const KIND: &'static str = "journal entry";
    const FORMAT: u32 = ENTRY_FORMAT;
}

/// Consecutive entries written as one object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Batch {
    pub format_version: u32,
    pub entries: Vec<Entry>,
}

impl Persisted for Batch {
    const KIND: &'static str = "journal batch";
    const FORMAT: u32 = 1;
}

/// The first object an owner writes after reading the journal: its entries,
/// and the slot of the next object. (Its own field names, so that a binary
/// that predates fences reports it as an integrity error instead of reading
/// the slots it skips.)
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Fence {
    pub format_version: u32,
    pub fenced: Vec<Entry>,
    pub next_slot: u64,
}

impl Persisted for Fence {
    const KIND: &'static str = "journal fence";
    const FORMAT: u32 = 1;
}

/// A finished run's whole journal in one object (`runs/<id>/journal.json`),
/// written once the run has finished, when nothing more can be appended:
/// reading a finished run is then one request, not a listing and a request
/// per journal object (at 10,000 services, about 1,000 objects on S3). The
/// journal objects stay the record; this is derived from them, written
/// create-if-absent, and checked on read (its run, entries numbered from 0
/// without a gap, the last one finishing the run). One that fails a check is
/// passed over, with a warning, for the journal itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Compacted {
    pub format_version: u32,
    pub run_id: String,
    pub entries: Vec<Entry>,
}

impl Persisted for Compacted {
    const KIND: &'static str = "compacted journal";
    const FORMAT: u32 = 1;
}

/// The most entries one object holds; also how far a fence skips.
pub const MAX_BATCH: usize = 256;

pub struct Journal {
    store: DynStore,
    run_id: String,
    next_slot: u64,
    next_seq: u64,
    /// The next write is this owner's first after reading the journal.
    fence: bool,
}

/// A journal write prepared and not yet known to be made. `commit` may be
/// retried: it writes the same bytes at the same slot.
#[derive(Clone)]
pub struct Write {
    store: DynStore,
    run_id: String,
    slot: u64,
    bytes: Bytes,
    entries: Vec<Entry>,
}

impl Write {
    /// Makes the write. `Conflict` means another writer took the slot: this
    /// owner has been fenced off and must stop.
    pub async fn commit(&self) -> Result<Vec<Entry>> {
        let key = layout::journal_object(&self.run_id, self.slot);
        match self.store.put(&key, self.bytes.clone(), PutOptions::create()).await {
            Ok(_) => Ok(self.entries.clone()),
            // An earlier try of this very write landed with its reply lost.
            Err(StoreError::AlreadyExists { .. })
                if self.store.get(&key).await.ok().flatten().is_some_and(|o| o.bytes == self.bytes) =>
            {
                Ok(self.entries.clone())
            }
            Err(StoreError::AlreadyExists { .. }) => Err(Error::Conflict(format!(
                "run {} was taken over by another server (journal object {} already written)",
                self.run_id, self.slot
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

impl Journal {
    /// Reads every entry, in order, and returns a journal positioned after
    /// them, whose first write is a fence.
    pub async fn open(store: DynStore, run_id: &str) -> Result<(Journal, Vec<Entry>)> {
        let (entries, next_slot) = read_all(&store, run_id).await?;
        let next_seq = entries.last().map_or(0, |e| e.seq + 1);
        Ok((Journal { store, run_id: run_id.to_string(), next_slot, next_seq, fence: true }, entries))
    }

    /// The journal of a run whose `run.json` this server has just created:
    /// empty, so nothing is read (on S3 that saves a round trip before the
    /// first launch). Were anything there, the first append would collide
    /// with it and fail as a takeover, writing nothing.
    pub fn new_run(store: DynStore, run_id: &str) -> Journal {
        Journal { store, run_id: run_id.to_string(), next_slot: 0, next_seq: 0, fence: false }
    }

    /// Appends one entry.
    pub async fn append(&mut self, at: String, elapsed_ms: u64, event: Event) -> Result<Entry> {
        let mut v = self.append_all(at, elapsed_ms, vec![event]).await?;
        Ok(v.remove(0))
    }

    /// Appends entries as one object; all are durable, or none.
    pub async fn append_all(&mut self, at: String, elapsed_ms: u64, events: Vec<Event>) -> Result<Vec<Entry>> {
        self.prepare(at, elapsed_ms, events).commit().await
    }

    /// The next write (one entry alone is written as itself), numbered after
    /// every write prepared before it. Until it is committed, at most one
    /// more may be prepared and committed alongside it; whoever prepared them
    /// acts on the second only once the first is made too. A write that
    /// cannot be made ends this owner's use of the journal.
    pub fn prepare(&mut self, at: String, elapsed_ms: u64, events: Vec<Event>) -> Write {
        assert!(!events.is_empty() && events.len() <= MAX_BATCH, "a batch has 1 to {MAX_BATCH} events");
        let first = self.next_seq;
        let entries: Vec<Entry> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Entry {
                format_version: ENTRY_FORMAT,
                seq: first + i as u64,
                at: at.clone(),
                elapsed_ms,
                event,
            })
            .collect();
        let slot = self.next_slot;
        let bytes = if std::mem::take(&mut self.fence) {
            self.next_slot = slot + MAX_BATCH as u64 + 1;
            codec::encode_compact(&Fence {
                format_version: Fence::FORMAT,
                fenced: entries.clone(),
                next_slot: self.next_slot,
            })
        } else {
            self.next_slot = slot + entries.len() as u64;
            match entries.as_slice() {
                [one] => codec::encode_compact(one),
                _ => codec::encode_compact(&Batch { format_version: Batch::FORMAT, entries: entries.clone() }),
            }
        };
        self.next_seq += entries.len() as u64;
        Write { store: self.store.clone(), run_id: self.run_id.clone(), slot, bytes, entries }
    }
}

/// One journal object: its entries, and the slot of the object after it.
struct Object {
    slot: u64,
    entries: Vec<Entry>,
    next_slot: u64,
    is_fence: bool,
}

/// The entries of one journal object (an entry, a batch or a fence).
#[cfg(test)]
pub(crate) fn decode_object(bytes: &[u8], key: &str, store: &str) -> Result<Vec<Entry>> {
    let slot = layout::journal_slot(key).unwrap_or(0);
    Ok(decode_at(bytes, slot, key, store)?.entries)
}

/// One journal object, parsed once: its fields tell an entry, a batch and a
/// fence apart.
fn decode_at(bytes: &[u8], slot: u64, key: &str, store: &str) -> Result<Object> {
    let value = codec::parse(bytes).map_err(|e| codec::integrity::<Entry>(key, store, e))?;
    let has = |field: &str| value.get(field).is_some();
    let (entries, next_slot, is_fence) = if has("fenced") {
        let f: Fence = codec::decode_value(value, key, store)?;
        let least = slot + f.fenced.len() as u64;
        if f.next_slot < least || f.next_slot > slot + MAX_BATCH as u64 + 1 {
            let why = format!("its next slot {} is out of range", f.next_slot);
            return Err(codec::integrity::<Fence>(key, store, IntegrityError::Malformed(why)));
        }
        (f.fenced, f.next_slot, true)
    } else if has("entries") && !has("event") {
        let b: Batch = codec::decode_value(value, key, store)?;
        let next = slot + b.entries.len() as u64;
        (b.entries, next, false)
    } else {
        (vec![codec::decode_value::<Entry>(value, key, store)?], slot + 1, false)
    };
    if entries.is_empty() {
        let why = "the batch has no entries".into();
        return Err(codec::integrity::<Batch>(key, store, IntegrityError::Malformed(why)));
    }
    Ok(Object { slot, entries, next_slot, is_fence })
}

/// Every entry of a run: from its compacted journal if it has finished and
/// has one, else from the journal objects (a finished run's journal is then
/// compacted, so the next read is one request: runs that finished before
/// compaction existed, or whose server stopped before writing it).
pub async fn read_run(store: &DynStore, run_id: &str) -> Result<Vec<Entry>> {
    let key = layout::journal_compacted(run_id);
    if let Some(obj) = store.get(&key).await? {
        match check_compacted(&obj.bytes, run_id, &key, &store.describe()) {
            Ok(entries) => return Ok(entries),
            Err(e) => tracing::warn!(
                run_id,
                key,
                error = %e,
                "the compacted journal of the run fails its checks; reading the journal objects instead"
            ),
        }
    }
    let entries = read_from(store, run_id, 0).await?;
    if finishes(&entries)
        && let Err(e) = compact(store, run_id, entries.clone()).await
    {
        tracing::debug!(run_id, error = %e, "cannot compact the journal of a finished run");
    }
    Ok(entries)
}

/// Whether the entries end with the run finishing: nothing more is ever appended.
fn finishes(entries: &[Entry]) -> bool {
    entries.last().is_some_and(|e| matches!(e.event, Event::RunFinished { .. }))
}

/// Writes a finished run's compacted journal (create-if-absent: one already
/// there is left as it is).
pub async fn compact(store: &DynStore, run_id: &str, entries: Vec<Entry>) -> Result<()> {
    debug_assert!(finishes(&entries), "only a finished run's journal is compacted");
    let bytes =
        codec::encode_compact(&Compacted { format_version: Compacted::FORMAT, run_id: run_id.to_string(), entries });
    match store.put(&layout::journal_compacted(run_id), bytes, PutOptions::create()).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A compacted journal's entries, if it is whole: this run's, numbered from
/// 0 without a gap, and finishing the run.
fn check_compacted(bytes: &[u8], run_id: &str, key: &str, store: &str) -> Result<Vec<Entry>> {
    let c: Compacted = codec::decode(bytes, key, store)?;
    let malformed = |why: String| codec::integrity::<Compacted>(key, store, IntegrityError::Malformed(why));
    if c.run_id != run_id {
        return Err(malformed(format!("it is the journal of run {}", c.run_id)));
    }
    if let Some((i, e)) = c.entries.iter().enumerate().find(|(i, e)| e.seq != *i as u64) {
        return Err(malformed(format!("entry {i} is numbered {}", e.seq)));
    }
    if !finishes(&c.entries) {
        return Err(malformed("its last entry does not finish the run".into()));
    }
    Ok(c.entries)
}

/// Entries with `seq >= from`, in order. A gap is an integrity error naming
/// the run and the missing slot.
pub async fn read_from(store: &DynStore, run_id: &str, from: u64) -> Result<Vec<Entry>> {
    let (mut entries, _) = read_all(store, run_id).await?;
    entries.retain(|e| e.seq >= from);
    Ok(entries)
}

/// Every entry, and the slot the next write goes to.
async fn read_all(store: &DynStore, run_id: &str) -> Result<(Vec<Entry>, u64)> {
    let keys = store.list(&layout::journal_prefix(run_id)).await?;
    let mut slots: Vec<u64> = keys.iter().filter_map(|k| layout::journal_slot(k)).collect();
    slots.sort_unstable();
    let keys: Vec<String> = slots.iter().map(|&slot| layout::journal_object(run_id, slot)).collect();
    let got = store.get_many(&keys).await?;
    let describe = store.describe();
    let objects = slots
        .iter()
        .zip(&keys)
        .zip(got)
        .map(|((&slot, key), obj)| {
            let obj = obj.ok_or_else(|| Error::Internal(format!("journal entry {key} vanished")))?;
            decode_at(&obj.bytes, slot, key, &describe)
        })
        .collect::<Result<Vec<Object>>>()?;
    assemble(run_id, &describe, objects)
}

/// Follows the objects from slot 0: each at the slot the one before names.
/// Past a missing slot, one object (within `MAX_BATCH`) was never
/// acknowledged and is not read; more is a gap. Objects between a fence and
/// the slot it names are late writes of an earlier owner, never read.
fn assemble(run_id: &str, store: &str, objects: Vec<Object>) -> Result<(Vec<Entry>, u64)> {
    let integrity = |slot: u64, why: String| Error::Integrity {
        what: format!("the journal of run {run_id}"),
        key: layout::journal_object(run_id, slot),
        store: store.to_string(),
        source: Box::new(IntegrityError::Malformed(why)),
    };
    let (mut expect_slot, mut expect_seq) = (0u64, 0u64);
    let mut after_fence = false;
    let mut out = Vec::new();
    let count = objects.len();
    for (i, obj) in objects.into_iter().enumerate() {
        if obj.slot < expect_slot {
            if after_fence {
                continue;
            }
            return Err(integrity(obj.slot, format!("it overlaps the object before it, which ends at {expect_slot}")));
        }
        if obj.slot > expect_slot {
            let later = count - i;
            if later == 1 && obj.slot <= expect_slot + MAX_BATCH as u64 {
                break;
            }
            return Err(integrity(
                expect_slot,
                format!("object {expect_slot} is missing and {later} later objects exist (a gap in the journal)"),
            ));
        }
        for (k, entry) in obj.entries.iter().enumerate() {
            if entry.seq != expect_seq + k as u64 {
                return Err(Error::Integrity {
                    what: "journal entry".into(),
                    key: layout::journal_object(run_id, obj.slot),
                    store: store.to_string(),
                    source: Box::new(IntegrityError::WrongIdentity {
                        claimed: format!("entry {}", entry.seq),
                        expected: format!("entry {}", expect_seq + k as u64),
                    }),
                });
            }
        }
        expect_seq += obj.entries.len() as u64;
        expect_slot = obj.next_slot;
        after_fence = obj.is_fence;
        out.extend(obj.entries);
    }
    Ok((out, expect_slot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;

    #[tokio::test]
    async fn appends_in_order_and_fences_a_second_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let (mut a, entries) = Journal::open(store.clone(), "r1").await.unwrap();
        assert!(entries.is_empty());
        a.append("t".into(), 0, Event::RunStarted { owner: "a".into() }).await.unwrap();
        // A second owner opens the journal and appends: the first is fenced.
        let (mut b, entries) = Journal::open(store.clone(), "r1").await.unwrap();
        assert_eq!(entries.len(), 1);
        b.append("t".into(), 1, Event::RunResumed { owner: "b".into() }).await.unwrap();
        let err = a.append("t".into(), 2, Event::CancelRequested { by: "a".into() }).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        let all = read_from(&store, "r1", 0).await.unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(read_from(&store, "r1", 1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn batches_read_back_as_entries_from_any_point_and_fence_too() {
        let (_dir, store, mut a) = started().await;
        let batch = a.append_all("t".into(), 1, vec![cancel("x"), cancel("y"), cancel("z")]).await.unwrap();
        assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        a.append("t".into(), 2, cancel("w")).await.unwrap();
        let keys = store.list(&layout::journal_prefix("r1")).await.unwrap();
        assert_eq!(keys.len(), 3, "one object per write: {keys:?}");
        let all = read_from(&store, "r1", 0).await.unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        for from in 0..6 {
            let tail: Vec<u64> = read_from(&store, "r1", from).await.unwrap().iter().map(|e| e.seq).collect();
            assert_eq!(tail, (from..5).collect::<Vec<_>>(), "from {from}");
        }
        // A second owner appends after the batch; the first is fenced off.
        let (mut b, entries) = Journal::open(store.clone(), "r1").await.unwrap();
        assert_eq!(entries.len(), 5);
        b.append_all("t".into(), 3, vec![cancel("b1"), cancel("b2")]).await.unwrap();
        let err = a.append("t".into(), 4, cancel("late")).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        // Removing a batch, with two objects after it, leaves a gap that names its slot.
        store.delete(&layout::journal_object("r1", 1)).await.unwrap();
        let err = read_from(&store, "r1", 0).await.unwrap_err();
        assert!(err.to_string().contains("0000000001"), "{err}");
    }

    #[tokio::test]
    async fn a_new_run_journal_reads_nothing_and_collides_with_anything_there() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let mut fresh = Journal::new_run(store.clone(), "r1");
        fresh.append("t".into(), 0, Event::RunStarted { owner: "a".into() }).await.unwrap();
        assert_eq!(read_from(&store, "r1", 0).await.unwrap().len(), 1);
        // Something already at entry 0: the first append fails, writing nothing.
        let mut other = Journal::new_run(store.clone(), "r1");
        let err = other.append("t".into(), 0, Event::RunStarted { owner: "b".into() }).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        let all = read_from(&store, "r1", 0).await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(matches!(&all[0].event, Event::RunStarted { owner } if owner == "a"));
    }

    #[tokio::test]
    async fn a_gap_is_an_integrity_error_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let mut j = Journal::new_run(store.clone(), "r1");
        for _ in 0..4 {
            j.append("t".into(), 0, Event::RunStarted { owner: "a".into() }).await.unwrap();
        }
        store.delete(&layout::journal_object("r1", 1)).await.unwrap();
        let err = read_from(&store, "r1", 0).await.unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }) && err.to_string().contains("0000000001"), "{err}");
        assert!(Journal::open(store.clone(), "r1").await.is_err(), "nothing is written into a gap");
    }

    /// A store in a fresh directory, and a new run's journal holding its `RunStarted`.
    async fn started() -> (tempfile::TempDir, DynStore, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let mut j = Journal::new_run(store.clone(), "r1");
        j.append("t".into(), 0, Event::RunStarted { owner: "a".into() }).await.unwrap();
        (dir, store, j)
    }

    /// A finished run's journal reads back from its compacted object, which
    /// the first read writes; a compacted object that fails a check is passed
    /// over for the journal; an unfinished run is not compacted.
    #[tokio::test]
    async fn a_finished_runs_journal_is_read_from_its_compacted_object() {
        use crate::domain::run::RunState;
        let (_dir, store, mut a) = started().await;
        a.append_all("t".into(), 1, vec![cancel("x"), cancel("y")]).await.unwrap();
        let compacted = layout::journal_compacted("r1");
        assert_eq!(seqs(&read_run(&store, "r1").await.unwrap()), [0, 1, 2]);
        assert!(store.get(&compacted).await.unwrap().is_none(), "a running run is not compacted");
        a.append("t".into(), 2, Event::RunFinished { state: RunState::Cancelled }).await.unwrap();
        let all = read_from(&store, "r1", 0).await.unwrap();
        assert_eq!(read_run(&store, "r1").await.unwrap(), all);
        let obj = store.get(&compacted).await.unwrap().expect("the first read compacts a finished run");
        // Read from the compacted object alone: the journal objects are not read.
        for k in store.list(&layout::journal_prefix("r1")).await.unwrap() {
            store.delete(&k).await.unwrap();
        }
        assert_eq!(read_run(&store, "r1").await.unwrap(), all);
        // A compacted object that fails a check is passed over for the journal.
        let (_dir2, store2, mut b) = started().await;
        b.append_all("t".into(), 1, vec![cancel("x"), cancel("y")]).await.unwrap();
        b.append("t".into(), 2, Event::RunFinished { state: RunState::Cancelled }).await.unwrap();
        let whole: Compacted = codec::decode(&obj.bytes, &compacted, "test").unwrap();
        let mut gap = whole.clone();
        gap.entries.remove(1);
        let mut unfinished = whole.clone();
        unfinished.entries.pop();
        let other = Compacted { run_id: "r2".into(), ..whole.clone() };
        let bad = [
            Bytes::from_static(b"{\"format_version\": 1, \"run_id\": "),
            codec::encode_compact(&gap),
            codec::encode_compact(&unfinished),
            codec::encode_compact(&other),
        ];
        for bytes in bad {
            store2.delete(&compacted).await.unwrap();
            store2.put(&compacted, bytes.clone(), PutOptions::create()).await.unwrap();
            let err = check_compacted(&bytes, "r1", &compacted, "test").unwrap_err();
            assert!(err.to_string().contains("journal.json"), "{err}");
            assert_eq!(read_run(&store2, "r1").await.unwrap(), all, "{err}");
            // It is left as it is (create-if-absent), not overwritten.
            assert_eq!(store2.get(&compacted).await.unwrap().unwrap().bytes, bytes);
        }
    }

    fn cancel(by: &str) -> Event {
        Event::CancelRequested { by: by.into() }
    }

    fn seqs(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    /// A crash with the first of two writes in flight lost and the second
    /// made: the second was never acknowledged, so it is not read, and the
    /// next owner's fence takes the missing slot and skips the other.
    #[tokio::test]
    async fn one_write_past_a_missing_slot_was_never_acknowledged() {
        let (_dir, store, mut a) = started().await;
        let first = a.prepare("t".into(), 1, vec![cancel("x"), cancel("y")]);
        let second = a.prepare("t".into(), 1, vec![cancel("z")]);
        second.commit().await.unwrap();
        let (mut b, entries) = Journal::open(store.clone(), "r1").await.unwrap();
        assert_eq!(seqs(&entries), [0], "the write past the missing slot is not read");
        b.append("t".into(), 2, Event::RunResumed { owner: "b".into() }).await.unwrap();
        let err = first.commit().await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "a's first write meets b's fence: {err}");
        b.append_all("t".into(), 3, vec![cancel("b1"), cancel("b2")]).await.unwrap();
        b.append("t".into(), 3, cancel("b3")).await.unwrap();
        let all = read_from(&store, "r1", 0).await.unwrap();
        assert_eq!(seqs(&all), [0, 1, 2, 3, 4]);
        assert!(matches!(&all[1].event, Event::RunResumed { owner } if owner == "b"));
        assert!(!all.iter().any(|e| matches!(&e.event, Event::CancelRequested { by } if by == "z")));
        assert_eq!(seqs(&read_from(&store, "r1", 3).await.unwrap()), [3, 4]);
        // A third owner reads the same and fences after it.
        let (mut c, entries) = Journal::open(store.clone(), "r1").await.unwrap();
        assert_eq!(entries, all);
        c.append("t".into(), 4, Event::RunResumed { owner: "c".into() }).await.unwrap();
        let err = b.append("t".into(), 4, cancel("late")).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err}");
        assert_eq!(seqs(&read_from(&store, "r1", 0).await.unwrap()), [0, 1, 2, 3, 4, 5]);
    }

    /// A fenced-off owner's second write, in flight while the new owner took
    /// over, lands late: between the fence and the slot it names, unread.
    #[tokio::test]
    async fn a_late_write_of_a_fenced_off_owner_lands_where_nobody_reads() {
        let (_dir, store, mut a) = started().await;
        let events: Vec<Event> = (0..MAX_BATCH).map(|i| cancel(&format!("a{i}"))).collect();
        let first = a.prepare("t".into(), 1, events);
        let second = a.prepare("t".into(), 1, vec![cancel("a-late")]);
        let (mut b, _) = Journal::open(store.clone(), "r1").await.unwrap();
        b.append("t".into(), 2, Event::RunResumed { owner: "b".into() }).await.unwrap();
        assert!(matches!(first.commit().await.unwrap_err(), Error::Conflict(_)));
        second.commit().await.unwrap();
        let keys = store.list(&layout::journal_prefix("r1")).await.unwrap();
        assert_eq!(keys.len(), 3, "{keys:?}");
        b.append("t".into(), 3, cancel("b1")).await.unwrap();
        let all = read_from(&store, "r1", 0).await.unwrap();
        assert_eq!(seqs(&all), [0, 1, 2]);
        assert!(!all.iter().any(|e| matches!(&e.event, Event::CancelRequested { by } if by.starts_with('a'))));
    }

    #[tokio::test]
    async fn two_writes_past_a_missing_slot_are_a_gap() {
        let (_dir, store, mut a) = started().await;
        let _lost = a.prepare("t".into(), 1, vec![cancel("x")]);
        a.prepare("t".into(), 1, vec![cancel("y")]).commit().await.unwrap();
        a.prepare("t".into(), 1, vec![cancel("z")]).commit().await.unwrap();
        let err = read_from(&store, "r1", 0).await.unwrap_err();
        assert!(err.to_string().contains("0000000001") && err.to_string().contains("2 later objects"), "{err}");
        // One object far past the missing slot is no write in flight either.
        let (_dir, store, _) = started().await;
        let far = Entry { format_version: ENTRY_FORMAT, seq: 1, at: "t".into(), elapsed_ms: 1, event: cancel("far") };
        let key = layout::journal_object("r1", MAX_BATCH as u64 + 2);
        store.put(&key, codec::encode(&far), PutOptions::create()).await.unwrap();
        assert!(read_from(&store, "r1", 0).await.is_err());
    }

    #[tokio::test]
    async fn a_fence_naming_a_slot_out_of_range_is_an_integrity_error() {
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let entry = Entry { format_version: ENTRY_FORMAT, seq: 0, at: "t".into(), elapsed_ms: 0, event: cancel("x") };
        for next_slot in [0, MAX_BATCH as u64 + 2] {
            let fence = Fence { format_version: 1, fenced: vec![entry.clone()], next_slot };
            let key = layout::journal_object("r1", 0);
            store.put(&key, codec::encode(&fence), PutOptions::overwrite()).await.unwrap();
            let err = read_from(&store, "r1", 0).await.unwrap_err();
            assert!(err.to_string().contains("out of range"), "{err}");
        }
    }
}
