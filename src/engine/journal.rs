//! A run's append-only journal: one object per entry, written
//! create-if-absent at the next sequence number. The sequence doubles as a
//! fence: a stale owner's next write collides with the new owner's and fails.

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

    /// Appends one entry. `Conflict` means another writer took the sequence
    /// number: this owner has been fenced off and must stop.
    pub async fn append(&mut self, at: String, elapsed_ms: u64, event: Event) -> Result<Entry> {
        let entry = Entry { format_version: ENTRY_FORMAT, seq: self.next_seq, at, elapsed_ms, event };
        let key = layout::journal_entry(&self.run_id, entry.seq);
        let bytes = codec::encode(&entry);
        match self.store.put(&key, bytes.clone(), PutOptions::create()).await {
            Ok(_) => {
                self.next_seq += 1;
                Ok(entry)
            }
            // An earlier try of this very append landed with its reply lost.
            Err(StoreError::AlreadyExists { .. })
                if self.store.get(&key).await.ok().flatten().is_some_and(|o| o.bytes == bytes) =>
            {
                self.next_seq += 1;
                Ok(entry)
            }
            Err(StoreError::AlreadyExists { .. }) => Err(Error::Conflict(format!(
                "run {} was taken over by another server (journal entry {} already written)",
                self.run_id, entry.seq
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

/// Entries with `seq >= from`, in order. A missing entry (a gap) is an
/// integrity error naming the run and the sequence number.
pub async fn read_from(store: &DynStore, run_id: &str, from: u64) -> Result<Vec<Entry>> {
    let keys = store.list(&layout::journal_prefix(run_id)).await?;
    let mut seqs: Vec<u64> = keys.iter().filter_map(|k| layout::journal_seq(k)).filter(|s| *s >= from).collect();
    seqs.sort_unstable();
    if let Some(missing) = seqs.iter().zip(from..).find(|(s, expect)| *s != expect).map(|(_, e)| e) {
        return Err(Error::Integrity {
            what: format!("the journal of run {run_id}"),
            key: layout::journal_entry(run_id, missing),
            store: store.describe(),
            source: Box::new(IntegrityError::Malformed(format!("entry {missing} is missing (a gap in the journal)"))),
        });
    }
    let entries: Vec<Entry> = futures::stream::iter(seqs)
        .map(|seq| {
            let store = store.clone();
            let key = layout::journal_entry(run_id, seq);
            async move {
                let obj =
                    store.get(&key).await?.ok_or_else(|| Error::Internal(format!("journal entry {key} vanished")))?;
                let entry: Entry = codec::decode(&obj.bytes, &key, &store.describe())?;
                if entry.seq != seq {
                    return Err(Error::Integrity {
                        what: "journal entry".into(),
                        key,
                        store: store.describe(),
                        source: Box::new(IntegrityError::WrongIdentity {
                            claimed: format!("entry {}", entry.seq),
                            expected: format!("entry {seq}"),
                        }),
                    });
                }
                Ok(entry)
            }
        })
        .buffered(32)
        .try_collect()
        .await?;
    Ok(entries)
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
