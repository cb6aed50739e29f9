//! Opening the store file: path checks, connection settings, schema creation and checks, and the
//! mapping of SQLite errors onto [`ErrorKind`].
//!
//! # Durability
//!
//! The file runs in WAL mode with `synchronous = NORMAL`. In WAL mode that level never corrupts
//! the database, and a committed transaction survives the crash of any process (SIGKILL
//! included): the WAL is in the page cache the kernel writes back. Only an operating-system crash
//! or power loss may roll back the last transactions (the WAL is synced at checkpoints, not at
//! every commit). We accept that: after a power loss every network namespace, veth and vxlan
//! device of this host is gone too, and the agent re-publishes its state on start. `FULL` would
//! cost an fsync per write (a millisecond or more each) on the hot path of CAS-driven IPAM.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::error::{Error, ErrorKind, Result};

/// `PRAGMA application_id` of an overlay store file ("OVLY"), so a foreign SQLite file is
/// recognised and refused instead of being written to.
pub(super) const APPLICATION_ID: i32 = 0x4f56_4c59;

/// `PRAGMA user_version` of the schema this code writes.
pub(super) const SCHEMA_VERSION: i32 = 1;

/// The schema. Every write touches as few pages as possible (each dirty page is 4 KiB more in
/// the write-ahead log): `kv` is one b-tree (`WITHOUT ROWID`, keyed by the key); `log` has no
/// index but its rowid, and the current revision is the `rev` of its last row instead of a
/// counter in `meta` (compaction never deletes the last row). Log ids need no AUTOINCREMENT:
/// only the oldest rows are ever deleted, so `max(id) + 1` never reuses an id. Lease ids do
/// need it, so a swept lease's id never comes back as another client's.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    compacted INTEGER NOT NULL,
    schema INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, compacted, schema) VALUES (0, 0, 1);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    rev INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB,
    deleted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    expires_ms INTEGER NOT NULL,
    owner TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_ms);
";

/// Opens a connection to the store file at `path`, creating the file and its schema if absent.
///
/// The directory must exist: a missing one is almost always a typo in the URL, and creating it
/// would scatter files; the error says which directory and how to create it.
pub(super) fn open(path: &Path, timeout: Duration) -> Result<Connection> {
    check_path(path)?;
    let shown = path.display().to_string();
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags)
        .map_err(|e| sql_error("open embedded store", format!("cannot open {shown}"), e))?;
    conn.busy_timeout(timeout)
        .map_err(|e| sql_error("open embedded store", format!("cannot set up {shown}"), e))?;
    // Switching a fresh file to WAL needs an exclusive lock, and SQLite does not wait for that
    // one (nor for some locks of a schema being created): when several clients open a new file
    // at once, retry until the timeout.
    let deadline = Instant::now() + timeout;
    loop {
        match set_up(&mut conn, &shown) {
            Err(e) if e.kind() == ErrorKind::Timeout && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(conn),
        }
    }
}

fn set_up(conn: &mut Connection, shown: &str) -> Result<()> {
    let setup = |e| sql_error("open embedded store", format!("cannot set up {shown}"), e);
    let fresh = identify(conn, shown)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(setup)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "open embedded store",
            format!("{shown} cannot use write-ahead logging (journal mode stays {mode:?})"),
        )
        .with_hint("put the store on a local file system that supports shared memory (not NFS)"));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864;")
        .map_err(setup)?;
    if fresh {
        create_schema(conn, shown)?;
    }
    Ok(())
}

fn check_path(path: &Path) -> Result<()> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::invalid(
                "open embedded store",
                format!(
                    "{} (parent of store file {shown}) is not a directory",
                    dir.display()
                ),
            )
            .with_hint("point the file:// URL at a file inside a directory"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(Error::invalid(
                "open embedded store",
                format!(
                    "a part of {} (directory of store file {shown}) is a file, not a directory",
                    dir.display()
                ),
            )
            .with_hint("point the file:// URL at a file inside a directory"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // First use: the store's directory is made, private to its owner (the store holds
            // every host's records). Directories that exist keep their mode.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    Error::io(
                        "open embedded store",
                        format!(
                            "cannot create directory {} for store file {shown}",
                            dir.display()
                        ),
                        e,
                    )
                    .with_hint("create it as a user that may, or point the file:// URL elsewhere")
                })?;
        }
        Err(e) => {
            return Err(Error::io(
                "open embedded store",
                format!(
                    "cannot inspect directory {} of store file {shown}",
                    dir.display()
                ),
                e,
            ));
        }
    }
    if path.is_dir() {
        return Err(Error::invalid(
            "open embedded store",
            format!("store path {shown} is a directory"),
        )
        .with_hint("name a file, e.g. file:///var/lib/overlay/store.db"));
    }
    Ok(())
}

/// Checks that the file is ours (or empty); returns whether the schema must be created.
fn identify(conn: &Connection, shown: &str) -> Result<bool> {
    // One read transaction, so a schema another client is creating is seen whole or not at all.
    let snapshot = conn
        .unchecked_transaction()
        .map_err(|e| sql_error("open embedded store", format!("cannot read {shown}"), e))?;
    let not_ours = |why: String| {
        Error::invalid(
            "open embedded store",
            format!("{shown} is not an overlay store: {why}"),
        )
        .with_hint("point the file:// URL at a new file or an existing overlay store file")
    };
    let read = |sql: &str| -> Result<i64> {
        snapshot
            .query_row(sql, [], |r| r.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(ErrorCode::NotADatabase) => not_ours("it is not an SQLite database".into()),
                _ => sql_error("open embedded store", format!("cannot read {shown}"), e),
            })
    };
    let app = read("PRAGMA application_id")?;
    let tables = read("SELECT count(*) FROM sqlite_schema")?;
    let version = read("PRAGMA user_version")?;
    drop(snapshot);
    match app {
        0 if tables == 0 => Ok(true),
        0 => Err(not_ours(format!(
            "it is an SQLite database of another program ({tables} objects)"
        ))),
        a if a == i64::from(APPLICATION_ID) => {
            if version > i64::from(SCHEMA_VERSION) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "open embedded store",
                    format!(
                        "{shown} has schema version {version}, newer than {SCHEMA_VERSION} \
                         which this build knows"
                    ),
                )
                .with_hint("upgrade overlay, or use another store file"));
            }
            Ok(version < i64::from(SCHEMA_VERSION))
        }
        other => Err(not_ours(format!("its SQLite application id is {other:#x}"))),
    }
}

fn create_schema(conn: &mut Connection, shown: &str) -> Result<()> {
    let fail = |e| sql_error("create embedded store schema", format!("in {shown}"), e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    // Re-check under the write lock: another process may have won the race to create it.
    let app: i64 = tx
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(fail)?;
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(fail)?;
    if app == 0 && tables > 0 {
        return Err(Error::invalid(
            "open embedded store",
            format!("{shown} is not an overlay store: another program wrote tables into it"),
        )
        .with_hint("point the file:// URL at a new file or an existing overlay store file"));
    }
    tx.execute_batch(SCHEMA).map_err(fail)?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(fail)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(fail)?;
    tx.commit().map_err(fail)
}

/// Maps an SQLite error to the crate's error, with a hint for the cases an operator can fix.
pub(super) fn sql_error(op: &'static str, what: impl Into<String>, e: rusqlite::Error) -> Error {
    let (kind, hint): (ErrorKind, Option<&'static str>) = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => (
            ErrorKind::Timeout,
            Some(
                "another process held the store's write lock longer than the timeout; retry, \
                 or raise ?timeout= in the file:// URL",
            ),
        ),
        Some(ErrorCode::NotADatabase) => (
            ErrorKind::InvalidArgument,
            Some("the file is not an overlay store; point the file:// URL at another path"),
        ),
        Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly | ErrorCode::CannotOpen) => (
            ErrorKind::PermissionDenied,
            Some(
                "make the store file, its -wal and -shm files and its directory writable by \
                 this user",
            ),
        ),
        Some(ErrorCode::DiskFull) => (
            ErrorKind::Unavailable,
            Some("free space on the store's file system, then retry"),
        ),
        Some(ErrorCode::SystemIoFailure | ErrorCode::FileLockingProtocolFailed) => (
            ErrorKind::Unavailable,
            Some("the store file could not be read or written; check the disk and file system"),
        ),
        Some(ErrorCode::DatabaseCorrupt) => (
            ErrorKind::Internal,
            Some("the store file is damaged; restore it from a backup or start a new one"),
        ),
        Some(ErrorCode::TooBig) => (
            ErrorKind::InvalidArgument,
            Some("store smaller values (at most 4 MiB)"),
        ),
        _ => (ErrorKind::Internal, None),
    };
    let err = Error::new(kind, op, what).with_source(e);
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_schema_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = open(&path, Duration::from_secs(1)).unwrap();
        let app: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
        drop(conn);
        let conn = open(&path, Duration::from_secs(1)).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn refuses_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, vec![b'x'; 4096]).unwrap();
        let e = open(&text, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("not an SQLite database"), "{e}");
        assert_eq!(
            std::fs::read(&text).unwrap(),
            vec![b'x'; 4096],
            "the file was changed"
        );

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let e = open(&other, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("another program"), "{e}");
        let mode: String = Connection::open(&other)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "a foreign database was switched to WAL");
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        open(&path, Duration::from_secs(1))
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = open(&path, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    #[test]
    fn bad_paths_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let e = open(&file.join("below/s.db"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("plain"), "{e}");

        let e = open(dir.path(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("is a directory"), "{e}");

        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let e = open(&file.join("s.db"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
