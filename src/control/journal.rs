//! The outbox journal: an append-only file in the state directory that lets
//! unacknowledged messages survive a restart of the runner.
//!
//! Each line is one JSON record: an entry (`seq`, frame, flags), an
//! acknowledgement (`ack`), or the next sequence number (`next`, written
//! first by a compaction). Frames are stored already redacted. Lines are
//! written without fsync, so they survive a killed runner process (the data
//! is in the page cache) but not a power loss. A torn last line, from a
//! process killed mid-write, is skipped on load.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::outbox::Entry;

/// Compaction runs when the file is this many times larger than its live
/// entries (and at least `MIN_COMPACT_BYTES`).
const COMPACT_FACTOR: u64 = 4;
const MIN_COMPACT_BYTES: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Record {
    Entry {
        seq: u64,
        frame: String,
        urgent: bool,
        droppable: bool,
    },
    Ack {
        ack: u64,
    },
    Next {
        next: u64,
    },
}

/// The open journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    written: u64,
}

/// Contents of a journal when it was opened.
pub struct Loaded {
    pub journal: Journal,
    pub entries: Vec<Entry>,
    pub next_seq: u64,
}

impl Journal {
    /// Opens or creates the journal and returns its unacknowledged entries.
    pub fn open(path: &Path) -> std::io::Result<Loaded> {
        let mut entries = BTreeMap::new();
        let mut next_seq = 1;
        if path.exists() {
            let reader = BufReader::new(File::open(path)?);
            for (index, line) in reader.lines().enumerate() {
                let line = line?;
                let Ok(record) = serde_json::from_str::<Record>(&line) else {
                    tracing::warn!(path = %path.display(), line = index + 1, "skipping an unreadable outbox journal line");
                    continue;
                };
                apply(record, &mut entries, &mut next_seq);
            }
        }
        let mut journal = Journal {
            path: path.to_path_buf(),
            file: open_append(path)?,
            written: 0,
        };
        let entries: Vec<Entry> = entries.into_values().collect();
        journal.rewrite(&entries, next_seq)?;
        Ok(Loaded {
            journal,
            entries,
            next_seq,
        })
    }

    /// Appends an entry.
    pub fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        self.write(&Record::Entry {
            seq: entry.seq,
            frame: entry.frame.clone(),
            urgent: entry.urgent,
            droppable: entry.droppable,
        })
    }

    /// Appends an acknowledgement of every entry up to `seq`. The outbox
    /// relies on compaction instead; older journals may contain these.
    #[cfg(test)]
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        self.write(&Record::Ack { ack: seq })
    }

    /// Returns true when the file has grown well past the live entries.
    pub fn wants_compaction(&self, live_bytes: usize) -> bool {
        self.written > MIN_COMPACT_BYTES && self.written > COMPACT_FACTOR * live_bytes as u64
    }

    /// Replaces the file with the live entries only.
    pub fn rewrite(&mut self, entries: &[Entry], next_seq: u64) -> std::io::Result<()> {
        let temporary = self.path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        let mut written = 0u64;
        let mut records = vec![Record::Next { next: next_seq }];
        records.extend(entries.iter().map(|entry| Record::Entry {
            seq: entry.seq,
            frame: entry.frame.clone(),
            urgent: entry.urgent,
            droppable: entry.droppable,
        }));
        for record in &records {
            let line = encode(record);
            file.write_all(line.as_bytes())?;
            written += line.len() as u64;
        }
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        self.file = open_append(&self.path)?;
        self.written = written;
        Ok(())
    }

    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        let line = encode(record);
        self.file.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }
}

fn apply(record: Record, entries: &mut BTreeMap<u64, Entry>, next_seq: &mut u64) {
    match record {
        Record::Entry {
            seq,
            frame,
            urgent,
            droppable,
        } => {
            *next_seq = (*next_seq).max(seq + 1);
            entries.insert(
                seq,
                Entry {
                    seq,
                    frame,
                    urgent,
                    droppable,
                },
            );
        }
        Record::Ack { ack } => {
            entries.retain(|seq, _| *seq > ack);
            *next_seq = (*next_seq).max(ack + 1);
        }
        Record::Next { next } => *next_seq = (*next_seq).max(next),
    }
}

fn encode(record: &Record) -> String {
    let mut line = serde_json::to_string(record).unwrap_or_default();
    line.push('\n');
    line
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, droppable: bool) -> Entry {
        Entry {
            seq,
            frame: format!("frame-{seq}"),
            urgent: !droppable,
            droppable,
        }
    }

    #[test]
    fn reopen_keeps_unacked_entries_and_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut loaded = Journal::open(&path).unwrap();
        for seq in 1..=4 {
            loaded.journal.append(&entry(seq, seq % 2 == 0)).unwrap();
        }
        loaded.journal.ack(2).unwrap();
        drop(loaded);

        let reopened = Journal::open(&path).unwrap();
        let seqs: Vec<u64> = reopened.entries.iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, vec![3, 4]);
        assert_eq!(reopened.next_seq, 5);
        assert_eq!(reopened.entries[1].frame, "frame-4");
        assert!(reopened.entries[1].droppable);
    }

    #[test]
    fn all_acked_keeps_next_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut loaded = Journal::open(&path).unwrap();
        loaded.journal.append(&entry(1, false)).unwrap();
        loaded.journal.ack(1).unwrap();
        drop(loaded);
        let reopened = Journal::open(&path).unwrap();
        assert!(reopened.entries.is_empty());
        assert_eq!(reopened.next_seq, 2);
    }

    #[test]
    fn torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.jsonl");
        let mut loaded = Journal::open(&path).unwrap();
        loaded.journal.append(&entry(1, false)).unwrap();
        drop(loaded);
        let mut file = open_append(&path).unwrap();
        file.write_all(b"{\"seq\":2,\"frame\":\"trunc").unwrap();
        let reopened = Journal::open(&path).unwrap();
        let seqs: Vec<u64> = reopened.entries.iter().map(|entry| entry.seq).collect();
        assert_eq!(seqs, vec![1]);
    }
}
