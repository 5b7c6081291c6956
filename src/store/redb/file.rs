//! The database file itself: refusing what is not one, creating it
//! privately, consistent copies (backups), and reading every record of a
//! stopped file (`fulfilld migrate-to`).

use std::{io::Read, path::Path};

use redb::{Database, ReadableDatabase};

use super::tables;
use crate::store::{BackupStats, Result, Row, StoreError};

/// Whether the file was left open by a process that stopped without
/// closing it (redb's header flag `RECOVERY_REQUIRED`, bit 1 of byte 9):
/// its next open repairs it.
pub(super) fn needs_recovery(path: &Path) -> Result<bool> {
    let mut header = [0u8; 10];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header)) {
        Ok(()) => Ok(header[9] & 0b10 != 0),
        // Too short to say: check everything (redb then refuses it).
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// Refuses a file that cannot be a redb database, before redb sees it.
pub(super) fn check_header(path: &Path) -> Result<()> {
    let not_a_db = |reason: &str| StoreError::NotADatabase {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(StoreError::Io)?;
    let mut magic = [0u8; 4];
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"redb" => Ok(()),
        Ok(()) => Err(not_a_db("it does not start like one")),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(not_a_db(
            if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
                "the file is empty"
            } else {
                "the file is too short"
            },
        )),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// Refuses a redb file that is not fulfilld's (another program's database):
/// every fulfilld database has its `sessions` table from its first commit.
pub(super) fn check_tables(db: &Database, path: &Path) -> Result<()> {
    use redb::TableHandle;
    let found = db
        .begin_read()?
        .list_tables()?
        .any(|t| t.name() == "sessions");
    if found {
        return Ok(());
    }
    Err(StoreError::NotADatabase {
        path: path.display().to_string(),
        reason: "it is a redb database, but not fulfilld's".into(),
    })
}

/// Makes the directory entry of `path` durable (after a link or rename).
pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Creates `path` for writing, failing if anything (a file, a symlink) is
/// already there; readable by the owner only (it holds customer data). A
/// missing folder is created readable by the owner only, too.
pub(super) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Backs up a database file that no process has open (the server is stopped).
pub fn backup_file(src: &Path, dest: &Path) -> Result<BackupStats> {
    let db = open_stopped(src)?;
    copy_snapshot(&db, dest)
}

/// Opens a file no process has open, refusing one whose acknowledgement
/// log holds deliveries the tables do not (they are applied at the next
/// start; a copy of the tables alone would lose them).
fn open_stopped(src: &Path) -> Result<Database> {
    if !src.exists() {
        return Err(StoreError::Refused(format!(
            "{} does not exist",
            src.display()
        )));
    }
    check_header(src)?;
    let db = Database::builder()
        .set_check_integrity_on_open(true)
        .open(src)?;
    let (at, key) = tables::log_position_of(&db.begin_read()?)?;
    let unapplied = match key.and_then(|k| <[u8; 32]>::try_from(k).ok()) {
        Some(key) => super::acklog::pending(src, super::acklog::database_id(&key), at)?,
        None => 0,
    };
    if unapplied > 0 {
        return Err(StoreError::Unapplied {
            deliveries: unapplied,
            log: super::acklog::path_for(src).display().to_string(),
        });
    }
    Ok(db)
}

/// Hands every record of a stopped, current-layout file to `send`, the
/// installation key first, from one snapshot. A record that does not
/// decode stops the dump, naming it: a copy must not silently lose one.
pub fn dump_file(src: &Path, send: &mut dyn FnMut(Row) -> Result<()>) -> Result<()> {
    let db = open_stopped(src)?;
    let r = db.begin_read()?;
    let layout = tables::layout_of(&r)?;
    // Layout 2 holds the same records (3 only adds index terms, which are
    // not copied).
    if !matches!(layout, Some(2) | Some(tables::LAYOUT)) {
        return Err(StoreError::Refused(format!(
            "{} is in an older layout; start this version of fulfilld on it once (it upgrades the file) before copying it",
            src.display()
        )));
    }
    let key = tables::installation_key_of(&r)?
        .ok_or_else(|| StoreError::Corrupted("the database has no installation key".into()))?;
    send(Row::InstallationKey(key))?;
    tables::each_row(&r, send)
}

pub(super) fn copy_snapshot(db: &Database, dest: &Path) -> Result<BackupStats> {
    let exists = || {
        StoreError::Refused(format!(
            "{} already exists; choose a new file name",
            dest.display()
        ))
    };
    if dest.symlink_metadata().is_ok() {
        return Err(exists());
    }
    if dest.file_name().is_none() {
        return Err(StoreError::Refused(format!(
            "{} is not a file path",
            dest.display()
        )));
    }
    // An unpredictable name next to the destination, created exclusively.
    let name = crate::model::random_hex().map_err(|e| StoreError::Refused(e.to_string()))?;
    let tmp = dest.with_file_name(format!(".backup_{name}.partial"));
    let result = (|| {
        let file = create_private(&tmp).map_err(StoreError::Io)?;
        let snapshot = db.begin_read()?;
        let copy =
            Database::builder().create_with_backend(redb::backends::FileBackend::new(file)?)?;
        let mut w = copy.begin_write()?;
        w.set_two_phase_commit(true);
        let stats = tables::copy_all(&snapshot, &w)?;
        w.commit()?;
        drop(copy);
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(StoreError::Io)?;
        // A hard link never replaces an existing file, unlike rename.
        match std::fs::hard_link(&tmp, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(exists()),
            // A filesystem without hard links: rename, having checked above.
            Err(_) => std::fs::rename(&tmp, dest).map_err(StoreError::Io)?,
        }
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The new name itself must survive a crash.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::Io)?;
        }
        Ok(stats)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}
