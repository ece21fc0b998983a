//! A run's append-only journal: objects written create-if-absent at the
//! next sequence number, each holding one entry or a batch of consecutive
//! entries (events that arrived together are written together, so a busy
//! run does not pay one store round trip or fsync per event). The key is the
//! first entry's sequence number, and doubles as a fence: every writer
//! appends right after the last entry it knows, which always ends an object,
//! so a stale owner's next write collides with the new owner's and fails.

use futures::{StreamExt, TryStreamExt};

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

/// The most entries one object holds.
pub const MAX_BATCH: usize = 256;

pub struct Journal {
    store: DynStore,
    run_id: String,
    next_seq: u64,
}

impl Journal {
    /// Reads every entry, in order, and returns a journal positioned after them.
    pub async fn open(store: DynStore, run_id: &str) -> Result<(Journal, Vec<Entry>)> {
        let entries = read_from(&store, run_id, 0).await?;
        let next_seq = entries.last().map_or(0, |e| e.seq + 1);
        Ok((Journal { store, run_id: run_id.to_string(), next_seq }, entries))
    }

    /// The journal of a run whose `run.json` this server has just created:
    /// empty, so nothing is read (on S3 that saves a round trip before the
    /// first launch). Were anything there, the first append would collide
    /// with it and fail as a takeover, writing nothing.
    pub fn new_run(store: DynStore, run_id: &str) -> Journal {
        Journal { store, run_id: run_id.to_string(), next_seq: 0 }
    }

    /// Appends one entry. `Conflict` means another writer took the sequence
    /// number: this owner has been fenced off and must stop.
    pub async fn append(&mut self, at: String, elapsed_ms: u64, event: Event) -> Result<Entry> {
        let mut v = self.append_all(at, elapsed_ms, vec![event]).await?;
        Ok(v.remove(0))
    }

    /// Appends entries as one object (one entry alone is written as itself);
    /// all are durable, or none.
    pub async fn append_all(&mut self, at: String, elapsed_ms: u64, events: Vec<Event>) -> Result<Vec<Entry>> {
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
        let key = layout::journal_entry(&self.run_id, first);
        let bytes = match entries.as_slice() {
            [one] => codec::encode(one),
            _ => codec::encode(&Batch { format_version: 1, entries: entries.clone() }),
        };
        match self.store.put(&key, bytes.clone(), PutOptions::create()).await {
            Ok(_) => {
                self.next_seq += entries.len() as u64;
                Ok(entries)
            }
            // An earlier try of this very append landed with its reply lost.
            Err(StoreError::AlreadyExists { .. })
                if self.store.get(&key).await.ok().flatten().is_some_and(|o| o.bytes == bytes) =>
            {
                self.next_seq += entries.len() as u64;
                Ok(entries)
            }
            Err(StoreError::AlreadyExists { .. }) => Err(Error::Conflict(format!(
                "run {} was taken over by another server (journal entry {first} already written)",
                self.run_id
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

/// The entries of one journal object (an entry or a batch).
pub(crate) fn decode_object(bytes: &[u8], key: &str, store: &str) -> Result<Vec<Entry>> {
    let is_batch = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("entries").is_some() && v.get("event").is_none());
    if is_batch {
        let b: Batch = codec::decode(bytes, key, store)?;
        if b.entries.is_empty() {
            return Err(Error::Integrity {
                what: "journal batch".into(),
                key: key.to_string(),
                store: store.to_string(),
                source: Box::new(IntegrityError::Malformed("the batch has no entries".into())),
            });
        }
        Ok(b.entries)
    } else {
        Ok(vec![codec::decode::<Entry>(bytes, key, store)?])
    }
}

/// Entries with `seq >= from`, in order. A missing entry (a gap) is an
/// integrity error naming the run and the sequence number.
pub async fn read_from(store: &DynStore, run_id: &str, from: u64) -> Result<Vec<Entry>> {
    let keys = store.list(&layout::journal_prefix(run_id)).await?;
    let mut seqs: Vec<u64> = keys.iter().filter_map(|k| layout::journal_seq(k)).collect();
    seqs.sort_unstable();
    // The object holding `from` may start before it (a batch).
    let start = seqs.iter().rposition(|s| *s <= from).unwrap_or(0);
    let seqs = &seqs[start..];
    let gap = |missing: u64| Error::Integrity {
        what: format!("the journal of run {run_id}"),
        key: layout::journal_entry(run_id, missing),
        store: store.describe(),
        source: Box::new(IntegrityError::Malformed(format!("entry {missing} is missing (a gap in the journal)"))),
    };
    if from > 0 && seqs.first().is_none_or(|s| *s > from) {
        // Nothing at or before `from`: fine only when the journal is shorter.
        if let Some(&s) = seqs.first() {
            return Err(gap(from.min(s)));
        }
        return Ok(Vec::new());
    }
    if from == 0 && seqs.first().is_some_and(|s| *s != 0) {
        return Err(gap(0));
    }
    let objects: Vec<(u64, Vec<Entry>)> = futures::stream::iter(seqs.to_vec())
        .map(|seq| {
            let store = store.clone();
            let key = layout::journal_entry(run_id, seq);
            async move {
                let obj =
                    store.get(&key).await?.ok_or_else(|| Error::Internal(format!("journal entry {key} vanished")))?;
                let entries = decode_object(&obj.bytes, &key, &store.describe())?;
                for (i, entry) in entries.iter().enumerate() {
                    if entry.seq != seq + i as u64 {
                        return Err(Error::Integrity {
                            what: "journal entry".into(),
                            key,
                            store: store.describe(),
                            source: Box::new(IntegrityError::WrongIdentity {
                                claimed: format!("entry {}", entry.seq),
                                expected: format!("entry {}", seq + i as u64),
                            }),
                        });
                    }
                }
                Ok((seq, entries))
            }
        })
        .buffered(32)
        .try_collect()
        .await?;
    let mut out = Vec::new();
    let mut expect = None;
    for (seq, entries) in objects {
        if let Some(e) = expect
            && seq != e
        {
            return Err(gap(e));
        }
        expect = Some(seq + entries.len() as u64);
        out.extend(entries.into_iter().filter(|e| e.seq >= from));
    }
    Ok(out)
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
        let dir = tempfile::tempdir().unwrap();
        let store: DynStore = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let (mut a, _) = Journal::open(store.clone(), "r1").await.unwrap();
        a.append("t".into(), 0, Event::RunStarted { owner: "a".into() }).await.unwrap();
        let cancel = |by: &str| Event::CancelRequested { by: by.into() };
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
        // Removing a batch leaves a gap that names its first entry.
        store.delete(&layout::journal_entry("r1", 1)).await.unwrap();
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
        let (mut j, _) = Journal::open(store.clone(), "r1").await.unwrap();
        for _ in 0..3 {
            j.append("t".into(), 0, Event::RunStarted { owner: "a".into() }).await.unwrap();
        }
        store.delete(&layout::journal_entry("r1", 1)).await.unwrap();
        let err = read_from(&store, "r1", 0).await.unwrap_err();
        assert!(matches!(err, Error::Integrity { .. }) && err.to_string().contains("0000000001"), "{err}");
        assert!(Journal::open(store.clone(), "r1").await.is_err(), "nothing is written into a gap");
    }
}
