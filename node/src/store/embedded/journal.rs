//! The embedded store's journal: where a batch of message appends becomes durable without a
//! durable redb commit.
//!
//! A durable redb commit with quick repair costs two fsyncs and about 600 µs of CPU here
//! (the allocator state it saves is most of it), and a fan-out node makes one per message.
//! A batch made only of message appends is instead written here, one write and one
//! `fdatasync`, and redb commits it without durability. A checkpoint, a durable redb commit,
//! comes with the first batch more than a second after the last one, with any other kind of
//! write, and when the journal is full; it covers everything the journal held, which then
//! starts over from its first byte.
//!
//! Records lie back to back from offset 0, each `len: u32 | crc32: u32 | epoch: u64 |
//! payload` (little-endian; the checksum covers the epoch and the payload). An epoch is the
//! run of records between two checkpoints, and the store's `meta` table names the last epoch
//! a checkpoint covers. Opening the store replays the next epoch's records up to the first
//! that is not whole, then checkpoints, so that epoch is never written again: a torn batch
//! from a crash cannot be mistaken for records of a later run.
//!
//! The file grows in zeroed, synced steps and never shrinks, so an append overwrites blocks
//! that are already allocated and its `fdatasync` has no metadata to commit.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes before each record's payload.
pub(super) const HEADER: usize = 16;
/// The file grows by this much at a time.
const GROW_BY: u64 = 1 << 20;
/// The most the journal holds: a batch that would go past it gets a checkpoint instead.
pub(super) const CAPACITY: u64 = 64 << 20;

/// The journal file, positioned at the end of its current epoch.
pub(super) struct Journal {
    file: File,
    /// The file's length: zeros or older records past `at`.
    len: u64,
    /// The most the current epoch may hold ([`CAPACITY`] but in tests).
    capacity: u64,
    /// Where the next record goes.
    at: u64,
    /// The epoch records are written with.
    epoch: u64,
    /// The next write's bytes, kept to reuse its allocation.
    buf: Vec<u8>,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, to hold at most `capacity` bytes of records
    /// an epoch. Nothing is written until [`Journal::start`].
    pub(super) fn open(path: &Path, capacity: u64) -> io::Result<Journal> {
        let created = !path.exists();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        if created {
            // The new name must outlive a power cut too, or the records behind it would.
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                File::open(dir)?.sync_all()?;
            }
        }
        let len = file.metadata()?.len();
        Ok(Journal { file, len, capacity, at: 0, epoch: 0, buf: Vec::new() })
    }

    /// The payloads of `epoch`'s records, in order, up to the first that is not whole.
    pub(super) fn read(&self, epoch: u64) -> io::Result<Vec<Vec<u8>>> {
        // Records never lie past the capacity's last step; the bound keeps a stray file
        // from costing its whole size in memory.
        let mut bytes = vec![0; self.len.min(self.capacity.div_ceil(GROW_BY) * GROW_BY) as usize];
        self.file.read_exact_at(&mut bytes, 0)?;
        let mut payloads = Vec::new();
        let mut at = 0;
        while let Some(header) = bytes.get(at..at + HEADER) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let Some(checked) = bytes.get(at + 8..at + HEADER + len) else { break };
            let found_epoch = u64::from_le_bytes([
                checked[0], checked[1], checked[2], checked[3], checked[4], checked[5], checked[6], checked[7],
            ]);
            if len == 0 || found_epoch != epoch || crc32fast::hash(checked) != crc {
                break;
            }
            payloads.push(checked[8..].to_vec());
            at += HEADER + len;
        }
        Ok(payloads)
    }

    /// Starts writing `epoch` from the first byte; the caller has made everything before it
    /// durable elsewhere.
    pub(super) fn start(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.at = 0;
    }

    /// The epoch being written.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the current epoch holds any record.
    pub(super) fn holds_records(&self) -> bool {
        self.at > 0
    }

    /// Whether `count` records with `payload_bytes` of payloads in all fit.
    pub(super) fn fits(&self, count: usize, payload_bytes: usize) -> bool {
        self.at + (count * HEADER + payload_bytes) as u64 <= self.capacity
    }

    /// Appends the records and returns once they are durable. Callers check
    /// [`Journal::fits`] first.
    pub(super) fn append<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        self.buf.clear();
        // An empty payload would read back as the end of the records.
        for payload in payloads.filter(|p| !p.is_empty()) {
            let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&self.epoch.to_le_bytes());
            hasher.update(payload);
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(&hasher.finalize().to_le_bytes());
            self.buf.extend_from_slice(&self.epoch.to_le_bytes());
            self.buf.extend_from_slice(payload);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.at + self.buf.len() as u64;
        if end > self.len {
            self.grow(end)?;
        }
        self.file.write_all_at(&self.buf, self.at)?;
        self.file.sync_data()?;
        self.at = end;
        Ok(())
    }

    /// Extends the file past `end` with zeros and makes the new length durable.
    fn grow(&mut self, end: u64) -> io::Result<()> {
        let len = end.div_ceil(GROW_BY) * GROW_BY;
        let zeros = vec![0; (len - self.len) as usize];
        self.file.write_all_at(&zeros, self.len)?;
        self.file.sync_all()?;
        self.len = len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal in a fresh directory, which lives as long as the returned guard.
    fn new_journal() -> (tempfile::TempDir, std::path::PathBuf, Journal) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("journal");
        let journal = Journal::open(&path, CAPACITY).expect("open");
        (dir, path, journal)
    }

    fn payloads(journal: &Journal, epoch: u64) -> Vec<Vec<u8>> {
        journal.read(epoch).expect("read the journal")
    }

    #[test]
    fn records_come_back_in_order_for_their_epoch_only() {
        let (_dir, path, mut journal) = new_journal();
        journal.start(7);
        journal.append([&b"one"[..], b"two"].into_iter()).expect("append");
        journal.append([&b"three"[..]].into_iter()).expect("append");
        let reopened = Journal::open(&path, CAPACITY).expect("reopen");
        assert_eq!(payloads(&reopened, 7), [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        assert!(payloads(&reopened, 8).is_empty(), "another epoch's reader finds nothing");
    }

    #[test]
    fn a_new_epoch_hides_the_older_records_past_its_end() {
        let (_dir, path, mut journal) = new_journal();
        journal.start(1);
        journal.append([&b"old one"[..], b"old two"].into_iter()).expect("append");
        journal.start(2);
        // As long as the old first record, so the old second one starts right where the
        // new epoch's records end: only its epoch tells it apart.
        journal.append([&b"new one"[..]].into_iter()).expect("append");
        let reopened = Journal::open(&path, CAPACITY).expect("reopen");
        assert_eq!(payloads(&reopened, 2), [b"new one".to_vec()]);
    }

    #[test]
    fn reading_stops_at_the_first_record_that_is_not_whole() {
        let (_dir, path, mut journal) = new_journal();
        journal.start(3);
        journal.append([&b"kept"[..], b"torn", b"after the tear"].into_iter()).expect("append");
        // Flip a byte of the second payload, as a write cut short by a crash could leave it.
        let second_payload = (HEADER + 4 + HEADER) as u64;
        journal.file.write_all_at(b"T", second_payload).expect("corrupt");
        let reopened = Journal::open(&path, CAPACITY).expect("reopen");
        assert_eq!(payloads(&reopened, 3), [b"kept".to_vec()]);
    }

    #[test]
    fn the_file_grows_in_zeroed_steps_and_a_full_journal_says_so() {
        let (_dir, path, mut journal) = new_journal();
        journal.start(1);
        let big = vec![7u8; 1_500_000];
        journal.append([big.as_slice()].into_iter()).expect("append");
        assert_eq!(std::fs::metadata(&path).expect("metadata").len(), 2 * GROW_BY);
        assert!(journal.fits(1, 1_000_000));
        assert!(!journal.fits(1, CAPACITY as usize), "a batch past the capacity does not fit");
        assert_eq!(payloads(&Journal::open(&path, CAPACITY).expect("reopen"), 1), [big]);
    }
}
