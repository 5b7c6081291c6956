//! The acknowledgement log: how a webhook delivery is made durable with one
//! append and one `fdatasync` instead of a two-phase B-tree commit.
//!
//! A batch of deliveries is applied to the tables, appended here and synced,
//! and only then committed to redb, non-durably (so no reader ever sees a
//! change the disk does not hold) and answered. That commit records how far
//! into the log the tables are (`Position`). Every so often (and before the
//! file is closed) a durable commit (a checkpoint) makes the tables hold
//! everything logged so far and records the next generation at offset 0:
//! the log is then written again from its start. After a crash, redb opens
//! at its last durable commit, and the batches past its position are
//! exactly the deliveries acknowledged since; they are applied again
//! (`Storage::replay`) before anything else reads or writes.
//!
//! Why it is cheaper: on this disk (ext4, virtio) a redb durable commit is
//! two syncs that each write the pages, the grown file's metadata and the
//! inode; the log is written over blocks zeroed in advance and never grows,
//! so a sync is one data write and a cache flush (see the README's
//! performance notes).
//!
//! Batches are written with `O_DIRECT`, each padded to whole 4 KiB blocks:
//! through the page cache, a small append into a large folio (the kernel
//! keeps the folio size a write or a readahead made) dirtied and wrote the
//! whole folio, up to 1 MiB per 3.4 KB event. A filesystem that refuses
//! direct I/O gets the same aligned writes through the cache.
//!
//! One commit's entries are one batch, written with one write: a header
//! (`magic, database, generation, length`; the database is an id derived
//! from its installation key, so a log never applies to another database),
//! the entries (each `length, payload`, the payload `received_at_ms,
//! entropy, raw body`), and a trailer repeating the header with a checksum
//! of it all. Reading stops at the first block that does not start a whole
//! batch of this database and generation: the tail of a write a crash cut
//! short (a write's blocks reach the disk in any order; never
//! acknowledged), or what an earlier generation left. If a whole batch of
//! the generation is found after that point, the stop was damage to
//! acknowledged batches, and the store refuses to open rather than lose
//! them.

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::store::{Result, StoreError};

const MAGIC: &[u8; 4] = b"FAB3";
const END: &[u8; 4] = b"FAE3";
/// Every batch starts and ends on a block: direct I/O needs offsets,
/// lengths and memory aligned to the device's block (4 KiB covers them).
const BLOCK: usize = 4096;
const HEADER: usize = 4 + 8 + 8 + 4;
const TRAILER: usize = HEADER + 8;
/// The log's size, zeroed when it is created, so appends overwrite
/// allocated blocks and a sync writes no metadata. A batch that would not
/// fit is committed durably instead (a checkpoint), so the file never
/// grows.
const PREALLOC: u64 = 4 * 1024 * 1024;
/// Payloads are at most a webhook body (1 MiB, the contract) plus 16
/// bytes; anything longer is not an entry.
const MAX_PAYLOAD: usize = 1024 * 1024 + 4096;

/// A checkpoint is due after this many logged commits, or this many bytes
/// logged, since the last one. Measured at 2,000 events/s open loop: every
/// 50 commits kept each checkpoint at ~2 ms (p99 3.9 ms); every 250
/// commits cost 7 ms each (p99 6.5 ms), every 1,000 16 ms.
pub(super) const CHECKPOINT_COMMITS: u32 = 50;
pub(super) const CHECKPOINT_BYTES: u64 = 1024 * 1024;

/// How far into the log a commit's tables are: the generation, and the end
/// of the last batch they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) generation: u64,
    pub(super) offset: u64,
}

impl Position {
    pub(super) const FIRST: Position = Position {
        generation: 1,
        offset: 0,
    };

    pub(super) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    pub(super) fn from_bytes(b: &[u8]) -> Option<Position> {
        let (g, o) = b.split_first_chunk::<8>()?;
        let o: [u8; 8] = o.try_into().ok()?;
        Some(Position {
            generation: u64::from_le_bytes(*g),
            offset: u64::from_le_bytes(o),
        })
    }
}

/// One logged delivery, with the end of its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) received_at_ms: u64,
    pub(super) entropy: u64,
    pub(super) raw: Vec<u8>,
    /// The position a commit holding this batch's entries records.
    pub(super) batch_end: u64,
}

/// The payload of one delivery, as stored.
pub(super) fn payload(received_at_ms: u64, entropy: u64, raw: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + raw.len());
    p.extend_from_slice(&received_at_ms.to_le_bytes());
    p.extend_from_slice(&entropy.to_le_bytes());
    p.extend_from_slice(raw);
    p
}

fn entry_of(p: &[u8], batch_end: u64) -> Option<Entry> {
    let (now, rest) = p.split_first_chunk::<8>()?;
    let (entropy, raw) = rest.split_first_chunk::<8>()?;
    Some(Entry {
        received_at_ms: u64::from_le_bytes(*now),
        entropy: u64::from_le_bytes(*entropy),
        raw: raw.to_vec(),
        batch_end,
    })
}

fn checksum(header: &[u8], body: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(header);
    h.update(body);
    let sum = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&sum[..8]);
    out
}

/// The id batches carry: a log applies only to its own database.
pub(super) fn database_id(key: &crate::domain::ids::InstallationKey) -> [u8; 8] {
    let k = crate::domain::ids::derived_key(key, "acknowledgement log");
    let mut id = [0u8; 8];
    id.copy_from_slice(&k[..8]);
    id
}

/// The log beside `db`: `<name>.acklog`.
pub(super) fn path_for(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.with_file_name(format!("{name}.acklog"))
}

/// Bytes a batch of payloads of these lengths takes, padded.
pub(super) fn batch_len<'a>(payloads: impl Iterator<Item = &'a [u8]>) -> u64 {
    let body: usize = payloads.map(|p| 4 + p.len()).sum();
    (HEADER + body + TRAILER).next_multiple_of(BLOCK) as u64
}

pub(super) struct AckLog {
    /// Opened with `O_DIRECT` when the filesystem allows it (`direct`).
    file: File,
    direct: bool,
    /// Reused for each batch: aligned to `BLOCK` inside.
    scratch: Vec<u8>,
    path: PathBuf,
    database: [u8; 8],
    generation: u64,
    /// Where the next batch goes.
    offset: u64,
    commits: u32,
    /// Entries found at open still wait for `Storage::replay`: until then
    /// nothing is logged and no checkpoint moves the generation on.
    replay_pending: bool,
}

impl AckLog {
    /// Opens (or creates) the log of `db` (whose id is `database`), whose
    /// last durable commit recorded `at`; returns it with the entries past
    /// `at`: the acknowledged deliveries the tables do not hold.
    pub(super) fn open(db: &Path, database: [u8; 8], at: Position) -> Result<(AckLog, Vec<Entry>)> {
        Self::open_with(db, database, at, true)
    }

    /// `open`, with `O_DIRECT` only when `try_direct`.
    fn open_with(
        db: &Path,
        database: [u8; 8],
        at: Position,
        try_direct: bool,
    ) -> Result<(AckLog, Vec<Entry>)> {
        let path = path_for(db);
        let reader = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path)?,
            Err(e) => return Err(StoreError::Io(e)),
        };
        let (entries, offset) = read_entries(&reader, database, at, &path)?;
        let short = reader.metadata().map_err(StoreError::Io)?.len() < PREALLOC;
        drop(reader);
        if short {
            // A creation a crash cut short: zero the rest (entries stay).
            zero_to_prealloc(&path).map_err(StoreError::Io)?;
        }
        let (file, direct) = open_for_appends(&path, try_direct).map_err(StoreError::Io)?;
        let log = AckLog {
            file,
            direct,
            scratch: Vec::new(),
            path,
            database,
            generation: at.generation,
            offset,
            commits: 0,
            replay_pending: !entries.is_empty(),
        };
        Ok((log, entries))
    }

    /// Whether a batch of `len` bytes (`batch_len`) may be logged instead
    /// of committed durably.
    pub(super) fn may_log(&self, len: u64) -> bool {
        !self.replay_pending
            && self.commits < CHECKPOINT_COMMITS
            && self.offset < CHECKPOINT_BYTES
            && self.offset + len <= PREALLOC
    }

    /// The position a checkpoint records, when one is needed: something
    /// was logged since the last (or replay has just applied what was).
    pub(super) fn checkpoint(&self, replays: bool) -> Option<Position> {
        if self.replay_pending && !replays {
            return None;
        }
        (self.offset > 0).then(|| Position {
            generation: self.generation.saturating_add(1),
            offset: 0,
        })
    }

    /// After the durable commit that recorded `at` (from `checkpoint`).
    pub(super) fn checkpointed(&mut self, at: Position) {
        self.generation = at.generation;
        self.offset = at.offset;
        self.commits = 0;
        self.replay_pending = false;
    }

    /// Appends the entries of one commit, as one batch, and syncs them;
    /// returns the position a commit holding them records.
    pub(super) fn append<'p>(
        &mut self,
        payloads: impl Iterator<Item = &'p [u8]>,
    ) -> io::Result<Position> {
        let mut buf = vec![0u8; HEADER];
        for p in payloads {
            if p.len() > MAX_PAYLOAD {
                return Err(io::Error::other(
                    "a log entry is larger than a webhook body can be",
                ));
            }
            buf.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buf.extend_from_slice(p);
        }
        let body_len = buf.len() - HEADER;
        let head = header(MAGIC, self.database, self.generation, body_len);
        buf[..HEADER].copy_from_slice(&head);
        let sum = checksum(&head, &buf[HEADER..]);
        buf.extend_from_slice(&header(END, self.database, self.generation, body_len));
        buf.extend_from_slice(&sum);
        let len = buf.len().next_multiple_of(BLOCK);
        if self.offset + len as u64 > PREALLOC {
            return Err(io::Error::other("a log batch does not fit the log"));
        }
        let block = aligned(&mut self.scratch, len);
        block[..buf.len()].copy_from_slice(&buf);
        block[buf.len()..].fill(0);
        self.file.write_all_at(block, self.offset)?;
        self.file.sync_data()?;
        self.offset += len as u64;
        self.commits = self.commits.saturating_add(1);
        if self.scratch.len() > 2 * CHECKPOINT_BYTES as usize {
            // A rare large batch: give its memory back.
            self.scratch = Vec::new();
        }
        Ok(Position {
            generation: self.generation,
            offset: self.offset,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether appends bypass the page cache (`O_DIRECT`).
    pub(super) fn direct(&self) -> bool {
        self.direct
    }
}

/// `len` bytes of `scratch` starting on a `BLOCK` boundary (safe code: the
/// vector is made a block longer and the aligned part is lent out).
fn aligned(scratch: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if scratch.len() < len + BLOCK {
        scratch.resize(len + BLOCK, 0);
    }
    let start = scratch.as_ptr().align_offset(BLOCK);
    &mut scratch[start..start + len]
}

/// The log opened for appends, with `O_DIRECT` where a direct, aligned read
/// of its first block works; else through the page cache.
fn open_for_appends(path: &Path, try_direct: bool) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let refused = || io::Error::from_raw_os_error(libc::EINVAL);
    let direct = (if try_direct { Ok(()) } else { Err(refused()) })
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
        })
        .and_then(|f| {
            let mut scratch = Vec::new();
            f.read_exact_at(aligned(&mut scratch, BLOCK), 0)?;
            Ok(f)
        });
    match direct {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)?;
            Ok((f, false))
        }
        Err(e) => Err(e),
    }
}

/// Creates the log, zeroed to `PREALLOC` bytes, readable by this user only,
/// and makes its name durable.
fn create(path: &Path) -> Result<File> {
    let file = super::file::create_private(path).map_err(StoreError::Io)?;
    zero_from(&file, 0).map_err(StoreError::Io)?;
    super::file::sync_dir(path).map_err(StoreError::Io)?;
    Ok(file)
}

/// Zeroes `file` from `at` to `PREALLOC` and syncs it. In 4 KiB writes:
/// should the log go through the page cache, large folios would make each
/// small append write a whole folio (see the module docs).
fn zero_from(file: &File, mut at: u64) -> io::Result<()> {
    let zeros = vec![0u8; BLOCK];
    while at < PREALLOC {
        let n = (BLOCK as u64 - at % BLOCK as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

fn zero_to_prealloc(path: &Path) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    zero_from(&file, len)
}

fn header(magic: &[u8; 4], database: [u8; 8], generation: u64, body_len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(magic);
    h[4..12].copy_from_slice(&database);
    h[12..20].copy_from_slice(&generation.to_le_bytes());
    h[20..].copy_from_slice(&(body_len as u32).to_le_bytes());
    h
}

/// The whole batch of `database` and `generation` at `at`, if one is
/// there: its body.
fn batch_at(
    file: &File,
    database: [u8; 8],
    generation: u64,
    at: u64,
    len: u64,
) -> io::Result<Option<Vec<u8>>> {
    if at + (HEADER + TRAILER) as u64 > len {
        return Ok(None);
    }
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, at)?;
    let body_len = u32::from_le_bytes([head[20], head[21], head[22], head[23]]) as usize;
    if head != header(MAGIC, database, generation, body_len)
        || at + (HEADER + body_len + TRAILER) as u64 > len
    {
        return Ok(None);
    }
    let mut rest = vec![0u8; body_len + TRAILER];
    file.read_exact_at(&mut rest, at + HEADER as u64)?;
    let (body, trailer) = rest.split_at(body_len);
    if trailer[..HEADER] != header(END, database, generation, body_len)
        || trailer[HEADER..] != checksum(&head, body)
    {
        return Ok(None);
    }
    rest.truncate(body_len);
    Ok(Some(rest))
}

/// The entries of the whole batches from `from` on, and where they end.
fn read_entries(
    file: &File,
    database: [u8; 8],
    from: Position,
    path: &Path,
) -> Result<(Vec<Entry>, u64)> {
    let damaged = |at: u64, what: &str| {
        StoreError::Corrupted(format!(
            "the acknowledgement log {} is damaged at byte {at} ({what}); it holds webhook deliveries fulfilld acknowledged. Keep a copy; to start without them, move the file aside (Stripe will not send them again)",
            path.display()
        ))
    };
    let len = file.metadata().map_err(StoreError::Io)?.len();
    let mut entries = Vec::new();
    let mut at = from.offset;
    while let Some(body) =
        batch_at(file, database, from.generation, at, len).map_err(StoreError::Io)?
    {
        let end = at + (HEADER + body.len() + TRAILER).next_multiple_of(BLOCK) as u64;
        let mut b = body.as_slice();
        while !b.is_empty() {
            let entry = b
                .split_first_chunk::<4>()
                .map(|(n, r)| (u32::from_le_bytes(*n) as usize, r))
                .filter(|(n, r)| *n <= r.len())
                .and_then(|(n, r)| Some((entry_of(&r[..n], end)?, &r[n..])));
            let Some((entry, r)) = entry else {
                return Err(damaged(at, "an entry does not parse"));
            };
            entries.push(entry);
            b = r;
        }
        at = end;
    }
    // Nothing of this generation may follow: it would be an acknowledged
    // batch cut off by damage to the one before it.
    let mut probe = at.next_multiple_of(BLOCK as u64) + BLOCK as u64;
    while probe + (HEADER + TRAILER) as u64 <= len {
        if batch_at(file, database, from.generation, probe, len)
            .map_err(StoreError::Io)?
            .is_some()
        {
            return Err(damaged(
                at,
                "a batch cannot be read, and whole batches follow it",
            ));
        }
        probe += BLOCK as u64;
    }
    Ok((entries, at))
}

/// How many acknowledged deliveries the log beside `db` holds that its
/// tables (at `at`) do not (an offline copy would miss them).
pub(super) fn pending(db: &Path, database: [u8; 8], at: Position) -> Result<usize> {
    let path = path_for(db);
    match File::open(&path) {
        Ok(f) => Ok(read_entries(&f, database, at, &path)?.0.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// Writes `entries` beside the log for a person, one JSON line each
/// (`received_at_ms`, the body), and returns the file's path. For
/// acknowledged deliveries a replay could not apply.
pub(super) fn set_aside(
    log: &Path,
    generation: u64,
    entries: &[(u64, Vec<u8>)],
) -> Result<PathBuf> {
    use std::io::Write;
    let name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = log.with_file_name(format!("{name}.unapplied-{generation}.jsonl"));
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(StoreError::Io)?;
    for (received_at_ms, raw) in entries {
        let line = serde_json::json!({
            "received_at_ms": received_at_ms,
            "body": String::from_utf8_lossy(raw),
        });
        writeln!(file, "{line}").map_err(StoreError::Io)?;
    }
    file.sync_all().map_err(StoreError::Io)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: [u8; 8] = *b"database";

    fn entry(n: u8) -> Vec<u8> {
        payload(1000 + u64::from(n), 7, &vec![n; 100 + usize::from(n)])
    }

    fn at(generation: u64, offset: u64) -> Position {
        Position { generation, offset }
    }

    #[test]
    fn entries_past_the_position_come_back_for_their_database_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, found) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        assert!(found.is_empty());
        assert_eq!(std::fs::metadata(log.path()).unwrap().len(), PREALLOC);
        let (a, b, c) = (entry(1), entry(2), entry(3));
        let first = log
            .append([a.as_slice(), b.as_slice()].into_iter())
            .unwrap();
        assert_eq!(
            first.offset,
            batch_len([a.as_slice(), b.as_slice()].into_iter())
        );
        let second = log.append(std::iter::once(c.as_slice())).unwrap();
        let (_, found) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[1], entry_of(&b, first.offset).unwrap());
        assert_eq!(
            (found[2].received_at_ms, found[2].batch_end),
            (1003, second.offset)
        );
        // Tables that hold the first batch get only the second.
        let (_, found) = AckLog::open(&db, DB, first).unwrap();
        assert_eq!(found, vec![entry_of(&c, second.offset).unwrap()]);
        assert_eq!(pending(&db, DB, second).unwrap(), 0);
        // Another database's log (a file left beside a new one) is not applied.
        assert_eq!(pending(&db, *b"another!", Position::FIRST).unwrap(), 0);
        // A checkpoint at generation 2: what generation 1 wrote is in the tables.
        let next = log.checkpoint(false).unwrap();
        assert_eq!(next, at(2, 0));
        log.checkpointed(next);
        let d = entry(4);
        let end = log.append(std::iter::once(d.as_slice())).unwrap();
        let (reopened, found) = AckLog::open(&db, DB, next).unwrap();
        assert_eq!(found, vec![entry_of(&d, end.offset).unwrap()]);
        assert!(reopened.replay_pending);
        assert_eq!(pending(&db, DB, at(3, 0)).unwrap(), 0);
    }

    #[test]
    fn a_torn_last_batch_is_the_end_and_damage_before_a_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, _) = AckLog::open(&db, DB, at(5, 0)).unwrap();
        let (a, b, c) = (entry(1), entry(2), entry(3));
        let second = log.append(std::iter::once(a.as_slice())).unwrap().offset;
        assert_eq!(second % BLOCK as u64, 0);
        log.append([b.as_slice(), c.as_slice()].into_iter())
            .unwrap();
        let end = second + (HEADER + 8 + b.len() + c.len() + TRAILER) as u64;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(log.path())
            .unwrap();
        let original = std::fs::read(log.path()).unwrap();
        let first_only = vec![entry_of(&a, second).unwrap()];
        // Any byte of the first batch flipped (header, entries, trailer),
        // with a whole batch after it: damage, refused, never skipped.
        for i in (0..HEADER + 4 + a.len() + TRAILER).step_by(29) {
            f.write_all_at(&[original[i] ^ 0x04], i as u64).unwrap();
            let err = AckLog::open(&db, DB, at(5, 0))
                .err()
                .expect("damage must be refused");
            assert!(err.is_corruption(), "byte {i}: {err}");
            f.write_all_at(&original[i..=i], i as u64).unwrap();
        }
        // Any byte of the last batch: what a crash cutting its write short
        // leaves (never acknowledged), so it is the end.
        for i in (second as usize..end as usize).step_by(37) {
            f.write_all_at(&[original[i] ^ 0x04], i as u64).unwrap();
            let (_, found) = AckLog::open(&db, DB, at(5, 0)).unwrap();
            assert_eq!(found, first_only, "byte {i}");
            f.write_all_at(&original[i..=i], i as u64).unwrap();
        }
        assert_eq!(pending(&db, DB, at(5, 0)).unwrap(), 3);
        // Its trailer never written: the same, and the next batch goes there.
        f.write_all_at(&[0u8; TRAILER], end - TRAILER as u64)
            .unwrap();
        let (log, found) = AckLog::open(&db, DB, at(5, 0)).unwrap();
        assert_eq!(found, first_only);
        assert_eq!(log.offset, second);
    }

    /// Where direct I/O is refused (older tmpfs, some FUSE; forced here),
    /// the same log is written through the page cache, and each way reads
    /// the other's batches.
    #[test]
    fn the_page_cache_path_writes_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, _) = AckLog::open_with(&db, DB, Position::FIRST, false).unwrap();
        assert!(!log.direct());
        let (a, b) = (entry(1), entry(2));
        log.append(std::iter::once(a.as_slice())).unwrap();
        drop(log);
        let (mut log, found) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        assert_eq!(found.len(), 1);
        log.replay_pending = false;
        let end = log.append(std::iter::once(b.as_slice())).unwrap();
        let (_, found) = AckLog::open_with(&db, DB, Position::FIRST, false).unwrap();
        assert_eq!(found[1], entry_of(&b, end.offset).unwrap());
    }

    /// A log whose creation a crash cut short (shorter than its zeroed
    /// size) opens, keeps its entries and is zeroed to full size.
    #[test]
    fn a_short_log_opens_and_is_zeroed_to_size() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, _) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        let a = entry(1);
        log.append(std::iter::once(a.as_slice())).unwrap();
        drop(log);
        let path = path_for(&db);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(5000).unwrap();
        let (mut log, found) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), PREALLOC);
        log.replay_pending = false;
        log.append(std::iter::once(a.as_slice())).unwrap();
        assert_eq!(pending(&db, DB, Position::FIRST).unwrap(), 2);
        file.set_len(0).unwrap();
        let (_, found) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        assert!(found.is_empty(), "an empty file holds nothing");
    }

    #[test]
    fn logging_waits_for_replay_for_a_due_checkpoint_and_for_room() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, _) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        assert!(log.may_log(BLOCK as u64));
        assert!(!log.may_log(PREALLOC + 1), "a batch larger than the log");
        assert_eq!(log.checkpoint(false), None, "nothing to checkpoint");
        let a = entry(1);
        for _ in 0..CHECKPOINT_COMMITS {
            log.append(std::iter::once(a.as_slice())).unwrap();
        }
        assert!(!log.may_log(BLOCK as u64), "a checkpoint is due");
        let (log, found) = AckLog::open(&db, DB, Position::FIRST).unwrap();
        assert_eq!(found.len(), CHECKPOINT_COMMITS as usize);
        assert!(!log.may_log(BLOCK as u64), "entries wait for replay");
        assert_eq!(
            log.checkpoint(false),
            None,
            "only the replay's commit moves it on"
        );
        assert_eq!(log.checkpoint(true), Some(at(2, 0)));
    }
}
