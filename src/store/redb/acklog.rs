//! The acknowledgement log: how a webhook delivery is made durable with one
//! append and one `fdatasync` instead of a two-phase B-tree commit.
//!
//! A batch of deliveries is applied to the tables in a non-durable redb
//! commit, then appended here and synced; only then is any of them
//! answered. Every so often (and before the file is closed) a durable
//! commit (a checkpoint) makes the tables hold everything logged so far,
//! and stores the generation the log goes on with: the log is then
//! rewritten from its start under that generation. After a crash, redb
//! opens at its last durable commit, and the entries of the generation it
//! stored are exactly the deliveries acknowledged since; they are applied
//! again (`Storage::replay`) before anything else reads or writes.
//!
//! Why it is cheaper: on this disk (ext4, virtio) a redb durable commit is
//! two syncs that each write the pages, the grown file's metadata and the
//! inode; the log is written over blocks zeroed in advance, so a sync is
//! one data write and a cache flush (see the README's performance notes).
//!
//! Batches are written with `O_DIRECT`, each padded to whole 4 KiB blocks:
//! through the page cache, a small append into a large folio (the kernel
//! keeps the folio size a write or a readahead made) dirtied and wrote the
//! whole folio, up to 1 MiB per 3.4 KB event. A filesystem that refuses
//! direct I/O (tmpfs) gets the same aligned writes through the cache.
//!
//! One commit's entries are one batch, written with one write: a header
//! (`magic, generation, length`), the entries (each `length, payload`, the
//! payload `received_at_ms, entropy, raw body`), and a trailer repeating
//! the header with a checksum of it all. Reading stops at the first batch
//! whose header or trailer is missing or of another generation: the tail
//! of a write a crash cut short (never acknowledged), or what an earlier
//! generation left. A batch whose header and trailer agree but whose bytes
//! do not match the checksum is damage: the store refuses to open rather
//! than lose what was acknowledged. (A damaged 16-byte header reads as the
//! end of the log; that much is not told apart.)

use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::store::{Result, StoreError};

const MAGIC: &[u8; 4] = b"FAB2";
const END: &[u8; 4] = b"FAE2";
/// Every batch starts and ends on a block: direct I/O needs offsets,
/// lengths and memory aligned to the device's block (4 KiB covers them).
const BLOCK: usize = 4096;
const HEADER: usize = 4 + 8 + 4;
const TRAILER: usize = HEADER + 8;
/// Zeroed when the log is created, so appends overwrite allocated blocks
/// and a sync writes no metadata. Checkpoints keep the log under about
/// `CHECKPOINT_BYTES` plus one batch.
const PREALLOC: u64 = 4 * 1024 * 1024;
/// Payloads are at most a webhook body (1 MiB, the contract) plus 16
/// bytes; anything longer is not an entry.
const MAX_PAYLOAD: usize = 1024 * 1024 + 4096;
/// A batch is at most the writer's batch of such entries.
const MAX_BATCH_BYTES: usize = super::writer::MAX_BATCH * (MAX_PAYLOAD + 4);

/// A checkpoint is due after this many logged commits, or this many bytes
/// logged, since the last one. Measured at 2,000 events/s open loop: every
/// 50 commits kept each checkpoint at ~2 ms (p99 3.9 ms); every 250
/// commits cost 7 ms each (p99 6.5 ms), every 1,000 16 ms.
pub(super) const CHECKPOINT_COMMITS: u32 = 50;
pub(super) const CHECKPOINT_BYTES: u64 = 1024 * 1024;

/// One logged delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) received_at_ms: u64,
    pub(super) entropy: u64,
    pub(super) raw: Vec<u8>,
}

impl Entry {
    /// The payload as stored.
    pub(super) fn payload(received_at_ms: u64, entropy: u64, raw: &[u8]) -> Vec<u8> {
        let mut p = Vec::with_capacity(16 + raw.len());
        p.extend_from_slice(&received_at_ms.to_le_bytes());
        p.extend_from_slice(&entropy.to_le_bytes());
        p.extend_from_slice(raw);
        p
    }

    fn from_payload(p: &[u8]) -> Option<Entry> {
        let (now, rest) = p.split_first_chunk::<8>()?;
        let (entropy, raw) = rest.split_first_chunk::<8>()?;
        Some(Entry {
            received_at_ms: u64::from_le_bytes(*now),
            entropy: u64::from_le_bytes(*entropy),
            raw: raw.to_vec(),
        })
    }
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

/// The log beside `db`: `<name>.acklog`.
pub(super) fn path_for(db: &Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.with_file_name(format!("{name}.acklog"))
}

pub(super) struct AckLog {
    /// Opened with `O_DIRECT` when the filesystem allows it (`direct`).
    file: File,
    direct: bool,
    /// Reused for each batch: aligned to `BLOCK` inside.
    scratch: Vec<u8>,
    path: PathBuf,
    generation: u64,
    /// Where the next entry goes: the bytes of this generation so far.
    offset: u64,
    commits: u32,
    /// Entries found at open still wait for `Storage::replay`: until then
    /// nothing is logged and no checkpoint moves the generation on.
    replay_pending: bool,
}

impl AckLog {
    /// Opens (or creates) the log of `db`, whose last durable commit stored
    /// `generation`; returns it with the entries of that generation, which
    /// are the acknowledged deliveries the tables do not hold.
    pub(super) fn open(db: &Path, generation: u64) -> Result<(AckLog, Vec<Entry>)> {
        Self::open_with(db, generation, true)
    }

    /// `open`, with `O_DIRECT` only when `try_direct`.
    fn open_with(db: &Path, generation: u64, try_direct: bool) -> Result<(AckLog, Vec<Entry>)> {
        let path = path_for(db);
        let reader = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path)?,
            Err(e) => return Err(StoreError::Io(e)),
        };
        let (entries, offset) = read_entries(&reader, generation, &path)?;
        drop(reader);
        let (file, direct) = open_for_appends(&path, try_direct).map_err(StoreError::Io)?;
        let log = AckLog {
            file,
            direct,
            scratch: Vec::new(),
            path,
            generation,
            offset,
            commits: 0,
            replay_pending: !entries.is_empty(),
        };
        Ok((log, entries))
    }

    /// Whether this batch may be logged instead of committed durably.
    pub(super) fn may_log(&self) -> bool {
        !self.replay_pending && self.commits < CHECKPOINT_COMMITS && self.offset < CHECKPOINT_BYTES
    }

    /// The generation a checkpoint stores, when one is needed: something
    /// was logged since the last (or replay has just applied what was).
    pub(super) fn checkpoint_generation(&self, replays: bool) -> Option<u64> {
        if self.replay_pending && !replays {
            return None;
        }
        (self.offset > 0).then(|| self.generation.saturating_add(1))
    }

    /// After the durable commit that stored `generation`.
    pub(super) fn checkpointed(&mut self, generation: u64) {
        self.generation = generation;
        self.offset = 0;
        self.commits = 0;
        self.replay_pending = false;
    }

    /// Appends the entries of one commit, as one batch, and syncs them.
    pub(super) fn append<'p>(
        &mut self,
        payloads: impl Iterator<Item = &'p [u8]>,
    ) -> io::Result<()> {
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
        if body_len > MAX_BATCH_BYTES {
            return Err(io::Error::other(
                "a log batch is larger than the writer's batch can be",
            ));
        }
        let head = header(MAGIC, self.generation, body_len);
        buf[..HEADER].copy_from_slice(&head);
        let sum = checksum(&head, &buf[HEADER..]);
        buf.extend_from_slice(&header(END, self.generation, body_len));
        buf.extend_from_slice(&sum);
        let len = buf.len().next_multiple_of(BLOCK);
        let block = aligned(&mut self.scratch, len);
        block[..buf.len()].copy_from_slice(&buf);
        block[buf.len()..].fill(0);
        self.file.write_all_at(block, self.offset)?;
        self.file.sync_data()?;
        self.offset += len as u64;
        self.commits = self.commits.saturating_add(1);
        Ok(())
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
    // In 4 KiB writes: the page cache keeps the folio size a write made,
    // and dirtying one byte of a large folio writes all of it (zeroed in
    // 1 MiB writes, each 3.4 KB append cost 1 MiB of write_bytes).
    let zeros = vec![0u8; 4096];
    let mut at = 0;
    while at < PREALLOC {
        file.write_all_at(&zeros, at).map_err(StoreError::Io)?;
        at += zeros.len() as u64;
    }
    file.sync_all().map_err(StoreError::Io)?;
    super::file::sync_dir(path).map_err(StoreError::Io)?;
    Ok(file)
}

fn header(magic: &[u8; 4], generation: u64, body_len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(magic);
    h[4..12].copy_from_slice(&generation.to_le_bytes());
    h[12..].copy_from_slice(&(body_len as u32).to_le_bytes());
    h
}

/// The entries of `generation`'s whole batches from the start of the file,
/// and where they end.
fn read_entries(file: &File, generation: u64, path: &Path) -> Result<(Vec<Entry>, u64)> {
    let damaged = |at: u64, what: &str| {
        StoreError::Corrupted(format!(
            "the acknowledgement log {} is damaged at byte {at} ({what}); it holds webhook deliveries fulfilld acknowledged. Keep a copy; to start without them, move the file aside (Stripe will not send them again)",
            path.display()
        ))
    };
    let len = file.metadata().map_err(StoreError::Io)?.len();
    let mut entries = Vec::new();
    let mut at = 0u64;
    let mut head = [0u8; HEADER];
    while at + (HEADER + TRAILER) as u64 <= len {
        file.read_exact_at(&mut head, at).map_err(StoreError::Io)?;
        let body_len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]) as usize;
        if head != header(MAGIC, generation, body_len)
            || body_len > MAX_BATCH_BYTES
            || at + (HEADER + body_len + TRAILER) as u64 > len
        {
            break;
        }
        let mut rest = vec![0u8; body_len + TRAILER];
        file.read_exact_at(&mut rest, at + HEADER as u64)
            .map_err(StoreError::Io)?;
        let (body, trailer) = rest.split_at(body_len);
        if trailer[..HEADER] != header(END, generation, body_len) {
            // The end of the write never reached the disk.
            break;
        }
        if trailer[HEADER..] != checksum(&head, body) {
            return Err(damaged(at, "a batch does not match its checksum"));
        }
        let mut b = body;
        while !b.is_empty() {
            let entry = b
                .split_first_chunk::<4>()
                .map(|(n, r)| (u32::from_le_bytes(*n) as usize, r))
                .filter(|(n, r)| *n <= r.len())
                .and_then(|(n, r)| Some((Entry::from_payload(&r[..n])?, &r[n..])));
            let Some((entry, r)) = entry else {
                return Err(damaged(at, "an entry does not parse"));
            };
            entries.push(entry);
            b = r;
        }
        at += (HEADER + body_len + TRAILER).next_multiple_of(BLOCK) as u64;
    }
    Ok((entries, at))
}

/// How many acknowledged deliveries the log beside `db` holds that a
/// database at `generation` does not (an offline copy would miss them).
pub(super) fn pending(db: &Path, generation: u64) -> Result<usize> {
    let path = path_for(db);
    match File::open(&path) {
        Ok(f) => Ok(read_entries(&f, generation, &path)?.0.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Vec<u8> {
        Entry::payload(1000 + u64::from(n), 7, &vec![n; 100 + usize::from(n)])
    }

    #[test]
    fn entries_come_back_until_a_checkpoint_moves_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, found) = AckLog::open(&db, 1).unwrap();
        assert!(found.is_empty());
        assert_eq!(std::fs::metadata(log.path()).unwrap().len(), PREALLOC);
        let (a, b, c) = (entry(1), entry(2), entry(3));
        log.append([a.as_slice(), b.as_slice()].into_iter())
            .unwrap();
        log.append(std::iter::once(c.as_slice())).unwrap();
        let (_, found) = AckLog::open(&db, 1).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[1], Entry::from_payload(&b).unwrap());
        assert_eq!(found[2].received_at_ms, 1003);
        // A checkpoint stored generation 2: what generation 1 wrote is in the tables.
        assert_eq!(log.checkpoint_generation(false), Some(2));
        log.checkpointed(2);
        let d = entry(4);
        log.append(std::iter::once(d.as_slice())).unwrap();
        let (reopened, found) = AckLog::open(&db, 2).unwrap();
        assert_eq!(found, vec![Entry::from_payload(&d).unwrap()]);
        assert!(reopened.replay_pending);
        assert_eq!(pending(&db, 2).unwrap(), 1);
        assert_eq!(pending(&db, 3).unwrap(), 0);
    }

    #[test]
    fn a_torn_batch_is_the_end_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, _) = AckLog::open(&db, 5).unwrap();
        let (a, b, c) = (entry(1), entry(2), entry(3));
        log.append(std::iter::once(a.as_slice())).unwrap();
        let second = log.offset;
        assert_eq!(second % BLOCK as u64, 0);
        log.append([b.as_slice(), c.as_slice()].into_iter())
            .unwrap();
        let end = second + (HEADER + 8 + b.len() + c.len() + TRAILER) as u64;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(log.path())
            .unwrap();
        let original = std::fs::read(log.path()).unwrap();
        // Any byte of the second batch's entries flipped: refused, never skipped.
        for at in (second + HEADER as u64..end - TRAILER as u64).step_by(37) {
            let i = at as usize;
            f.write_all_at(&[original[i] ^ 0x04], at).unwrap();
            let err = AckLog::open(&db, 5).err().expect("damage must be refused");
            assert!(err.is_corruption(), "byte {at}: {err}");
            f.write_all_at(&original[i..=i], at).unwrap();
        }
        assert_eq!(pending(&db, 5).unwrap(), 3);
        // Its trailer never written (a crash during the write): only the first batch.
        f.write_all_at(&[0u8; TRAILER], end - TRAILER as u64)
            .unwrap();
        let (log, found) = AckLog::open(&db, 5).unwrap();
        assert_eq!(found, vec![Entry::from_payload(&a).unwrap()]);
        assert_eq!(log.offset, second);
        // Nor its header: the same.
        f.write_all_at(&[0u8; HEADER], second).unwrap();
        assert_eq!(pending(&db, 5).unwrap(), 1);
    }

    /// Where direct I/O is refused (older tmpfs, some FUSE; forced here),
    /// the same log is written through the page cache, and each way reads
    /// the other's batches.
    #[test]
    fn the_page_cache_path_writes_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, _) = AckLog::open_with(&db, 1, false).unwrap();
        assert!(!log.direct());
        let (a, b) = (entry(1), entry(2));
        log.append(std::iter::once(a.as_slice())).unwrap();
        drop(log);
        let (mut log, found) = AckLog::open(&db, 1).unwrap();
        assert_eq!(found.len(), 1);
        log.replay_pending = false;
        log.append(std::iter::once(b.as_slice())).unwrap();
        let (_, found) = AckLog::open_with(&db, 1, false).unwrap();
        assert_eq!(found[1], Entry::from_payload(&b).unwrap());
    }

    #[test]
    fn logging_waits_for_replay_and_then_for_a_checkpoint_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("f.redb");
        let (mut log, _) = AckLog::open(&db, 1).unwrap();
        assert!(log.may_log());
        assert_eq!(
            log.checkpoint_generation(false),
            None,
            "nothing to checkpoint"
        );
        let a = entry(1);
        for _ in 0..CHECKPOINT_COMMITS {
            log.append(std::iter::once(a.as_slice())).unwrap();
        }
        assert!(!log.may_log(), "a checkpoint is due");
        let (log, found) = AckLog::open(&db, 1).unwrap();
        assert_eq!(found.len(), CHECKPOINT_COMMITS as usize);
        assert!(!log.may_log(), "entries wait for replay");
        assert_eq!(
            log.checkpoint_generation(false),
            None,
            "no commit but the replay's may move the generation on"
        );
        assert_eq!(log.checkpoint_generation(true), Some(2));
    }
}
