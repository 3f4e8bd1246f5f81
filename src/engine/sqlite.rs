//! The store's database: one SQLite file, `wshub.db`, in the store
//! directory, with a `lock` file beside it that one hub holds while it
//! runs. Only the store thread touches it.
//!
//! Tables: `meta` (the format and the epoch), `rooms` (each room's last and
//! oldest seq, so that opening reads one row per room, not its history; a
//! room with no events left keeps its row, 100,000 of them at most, so
//! that made again it continues its seq), `events` (room, seq, time, the event's JSON), `keys` (idempotency keys
//! and their first reply). WAL journal, `synchronous = FULL`: a commit
//! returns after one sync of the log, and a crash at any point leaves every
//! committed transaction and nothing of the others.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Append, EngineError, Recovered, RecoveredKey, RecoveredRoom, StoredEvent, instant_ago, unix_ms,
};
use crate::protocol::{Published, new_uuid};

/// The database file's name inside the store directory.
pub(super) const DB_FILE: &str = "wshub.db";
/// The lock file's name inside the store directory.
const LOCK_FILE: &str = "lock";
/// What `meta.format` says in a store this code can read.
const FORMAT: &str = "wshub-store-1";
/// Files a store directory may hold besides nothing at all.
const OWN_FILES: [&str; 5] = [
    DB_FILE,
    "wshub.db-wal",
    "wshub.db-shm",
    "wshub.db-journal",
    LOCK_FILE,
];
/// How long an idempotency key is kept (PROTOCOL.md section 5).
const KEY_WINDOW_MS: u64 = 300_000;
/// How many idempotency keys are kept at most, as in memory.
const MAX_KEYS: u64 = 100_000;
/// How many rooms with no events left keep their last seq, as the hub's
/// memory of forgotten rooms does.
const MAX_FORGOTTEN: usize = 100_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, oldest_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    room TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, json BLOB NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_time ON events (at_ms);
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, id TEXT NOT NULL, seq INTEGER,
    recipients INTEGER NOT NULL, correlation_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_by_time ON keys (at_ms);
";

/// A room's seqs as the store holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoomRow {
    last: u64,
    /// `last + 1` once nothing is held; the row then goes.
    oldest: u64,
}

/// The open database and what the store thread keeps beside it.
#[derive(Debug)]
pub(super) struct Db {
    conn: Connection,
    /// Every room's row, as committed.
    rooms: HashMap<String, RoomRow>,
    /// Rooms whose append `seq` was refused: later seqs are refused too
    /// until that seq comes again, so a refusal never leaves a gap.
    refused: HashMap<String, u64>,
    history_size: u64,
    /// Debug builds only: while this file exists, writes fail as on a full
    /// disk (the run-time failure tests' fault hook).
    fail_writes_while: Option<PathBuf>,
    /// Held (locked) while the database is open.
    _lock: File,
}

/// The fault hook's variable, honoured by debug builds only.
const FAIL_WRITES_ENV: &str = "WSHUB_TEST_FAIL_WRITES_WHILE";

/// What opening a store found, for the start-up log.
#[derive(Debug)]
pub(super) struct Opened {
    pub db: Db,
    pub epoch: String,
    pub recovered: Recovered,
    pub created: bool,
    pub path: PathBuf,
}

/// Why a store could not be opened; the message names the directory.
pub(super) type OpenError = String;

impl Db {
    /// Opens (or creates) the store in `dir`, takes its lock and reads the
    /// epoch, the rooms and the idempotency keys still in their window.
    pub fn open(dir: &Path, history_size: usize) -> Result<Opened, OpenError> {
        let shown = dir.display();
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => return Err(format!("`{shown}` is not a directory")),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{shown}`: {e}"))?
            }
            Err(e) => return Err(format!("cannot read `{shown}`: {e}")),
        }
        let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read `{shown}`: {e}"))?;
        let mut foreign = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read `{shown}`: {e}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !OWN_FILES.contains(&name.as_str()) {
                foreign.push(name);
            }
        }
        let path = dir.join(DB_FILE);
        let exists = path.exists();
        if !exists && !foreign.is_empty() {
            foreign.sort();
            return Err(format!(
                "`{shown}` is not a wshub store: it holds other files ({}); give an empty or new directory",
                foreign.join(", ")
            ));
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| format!("cannot open `{shown}/{LOCK_FILE}`: {e}"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!("`{shown}` is held by another running hub"));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock `{shown}/{LOCK_FILE}`: {e}"));
            }
        }
        let not_ours =
            |e: rusqlite::Error| format!("`{}` is not a readable wshub store: {e}", path.display());
        let conn = Connection::open(&path).map_err(not_ours)?;
        // Exclusive: no shared-memory file, and no other process reads
        // half a state. WAL with FULL sync: one sync of the log per commit.
        // A 16 MiB page cache (the default is 2 MiB) keeps the pages that
        // appends touch, rather than reading them back each commit.
        conn.execute_batch(
            "PRAGMA locking_mode = EXCLUSIVE;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA cache_size = -16384;
             PRAGMA journal_size_limit = 16777216;",
        )
        .map_err(not_ours)?;
        let format: Option<String> = if exists {
            conn.query_row("SELECT value FROM meta WHERE name = 'format'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(not_ours)?
        } else {
            None
        };
        match format.as_deref() {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(format!(
                    "`{}` is a wshub store of format `{other}`; this hub reads `{FORMAT}`",
                    path.display()
                ));
            }
            None if exists && file_len(&path) > 0 => {
                return Err(format!(
                    "`{}` is not a wshub store (no format record)",
                    path.display()
                ));
            }
            None => {}
        }
        conn.execute_batch(SCHEMA).map_err(not_ours)?;
        let epoch: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE name = 'epoch'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(not_ours)?;
        let created = epoch.is_none();
        let epoch = match epoch {
            Some(epoch) => epoch,
            None => {
                let epoch = new_uuid();
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('format', ?1), ('epoch', ?2)",
                    params![FORMAT, epoch],
                )
                .map_err(|e| format!("cannot write to `{}`: {e}", path.display()))?;
                epoch
            }
        };
        let mut db = Db {
            conn,
            rooms: HashMap::new(),
            refused: HashMap::new(),
            history_size: history_size as u64,
            fail_writes_while: std::env::var_os(FAIL_WRITES_ENV)
                .filter(|_| cfg!(debug_assertions))
                .map(PathBuf::from),
            _lock: lock,
        };
        let recovered = db.load().map_err(not_ours)?;
        Ok(Opened {
            db,
            epoch,
            recovered,
            created,
            path,
        })
    }

    /// Reads every room's row and the keys still in their window.
    fn load(&mut self) -> rusqlite::Result<Recovered> {
        let mut recovered = Recovered::default();
        let mut rooms = self
            .conn
            .prepare("SELECT name, last_seq, oldest_seq FROM rooms")?;
        let rows = rooms.query_map([], |row| {
            Ok(RecoveredRoom {
                name: row.get(0)?,
                last_seq: row.get::<_, i64>(1)? as u64,
                oldest_seq: row.get::<_, i64>(2)? as u64,
            })
        })?;
        for room in rows {
            let room = room?;
            self.rooms.insert(
                room.name.clone(),
                RoomRow {
                    last: room.last_seq,
                    oldest: room.oldest_seq,
                },
            );
            recovered.rooms.push(room);
        }
        drop(rooms);
        let now = unix_ms();
        let mut keys = self.conn.prepare(
            "SELECT key, at_ms, id, seq, recipients, correlation_id FROM keys
             WHERE at_ms > ?1 ORDER BY at_ms",
        )?;
        let rows = keys.query_map([now.saturating_sub(KEY_WINDOW_MS) as i64], |row| {
            let at_ms = row.get::<_, i64>(1)? as u64;
            Ok(RecoveredKey {
                key: row.get(0)?,
                at: instant_ago(Duration::from_millis(now.saturating_sub(at_ms))),
                reply: Published {
                    id: row.get(2)?,
                    seq: row.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                    recipients: row.get::<_, i64>(4)? as usize,
                    correlation_id: row.get(5)?,
                },
            })
        })?;
        for key in rows {
            recovered.keys.push(key?);
        }
        Ok(recovered)
    }

    /// Stores every append it can in one transaction and one sync. The
    /// answers are in the order of `appends`: an append that does not
    /// follow its room's last seq (or a refused one) is refused alone; a
    /// failing write is `Err`: it refuses them all, and none is kept.
    pub fn append(
        &mut self,
        appends: &[Append],
    ) -> Result<Vec<Result<(), EngineError>>, EngineError> {
        let mut staged: HashMap<&str, RoomRow> = HashMap::new();
        let mut results = Vec::with_capacity(appends.len());
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO events (room, seq, at_ms, json) VALUES (?1, ?2, ?3, ?4)",
                )?;
                let mut key = tx.prepare_cached(
                    "INSERT OR IGNORE INTO keys (key, at_ms, id, seq, recipients, correlation_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for append in appends {
                    if let Some((room, seq)) = &append.room {
                        let row = staged
                            .get(&**room)
                            .or_else(|| self.rooms.get(&**room))
                            .copied();
                        if let Err(e) = follows(&self.refused, room, *seq, row) {
                            results.push(Err(e));
                            continue;
                        }
                        insert.execute(params![
                            &**room,
                            *seq as i64,
                            append.at_ms as i64,
                            &append.json[..]
                        ])?;
                        let oldest = match row {
                            Some(row) if row.oldest <= row.last => row.oldest,
                            _ => *seq,
                        };
                        let kept_from = (seq + 1).saturating_sub(self.history_size);
                        staged.insert(
                            &**room,
                            RoomRow {
                                last: *seq,
                                oldest: oldest.max(kept_from),
                            },
                        );
                    }
                    if let Some((k, reply)) = &append.key {
                        key.execute(params![
                            k,
                            append.at_ms as i64,
                            reply.id,
                            reply.seq.map(|s| s as i64),
                            reply.recipients as i64,
                            reply.correlation_id
                        ])?;
                    }
                    results.push(Ok(()));
                }
                let mut trim =
                    tx.prepare_cached("DELETE FROM events WHERE room = ?1 AND seq < ?2")?;
                let mut upsert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO rooms (name, last_seq, oldest_seq) VALUES (?1, ?2, ?3)",
                )?;
                for (room, row) in &staged {
                    trim.execute(params![room, row.oldest as i64])?;
                    // A room left with no events keeps its row (its last
                    // seq), so that made again after a restart it continues.
                    upsert.execute(params![room, row.last as i64, row.oldest as i64])?;
                }
            }
            injected_failure(self.fail_writes_while.as_deref())?;
            tx.commit()
        })();
        match outcome {
            Ok(()) => {
                for (room, row) in staged {
                    self.refused.remove(room);
                    self.rooms.insert(room.to_string(), row);
                }
                Ok(results)
            }
            Err(e) => {
                let error = EngineError::new(format!("the store cannot write: {e}"));
                for append in appends {
                    if let Some((room, seq)) = &append.room {
                        let refused = self.refused.entry(room.to_string()).or_insert(*seq);
                        *refused = (*refused).min(*seq);
                    }
                }
                Err(error)
            }
        }
    }

    /// The events of `room` after seq `after`, oldest first.
    pub fn read(&mut self, room: &str, after: u64) -> Result<Vec<StoredEvent>, EngineError> {
        let run = || -> rusqlite::Result<Vec<StoredEvent>> {
            let mut select = self.conn.prepare_cached(
                "SELECT seq, json FROM events WHERE room = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = select.query_map(params![room, after as i64], |row| {
                Ok(StoredEvent {
                    seq: row.get::<_, i64>(0)? as u64,
                    json: bytes::Bytes::from(row.get::<_, Vec<u8>>(1)?),
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| EngineError::new(format!("the store cannot read: {e}")))
    }

    /// Deletes events published before `before_ms` (none when `None`) and
    /// the idempotency keys past their window; returns each room whose
    /// history shrank, with its oldest seq now.
    pub fn expire(&mut self, before_ms: Option<u64>) -> Result<Vec<(String, u64)>, EngineError> {
        let now = unix_ms();
        let mut changed: HashMap<String, RoomRow> = HashMap::new();
        let mut dropped = Vec::new();
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            if let Some(before) = before_ms {
                let mut gone =
                    tx.prepare_cached("DELETE FROM events WHERE at_ms < ?1 RETURNING room, seq")?;
                let rows = gone.query_map([before as i64], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
                })?;
                for row in rows {
                    let (room, seq) = row?;
                    let Some(held) = self.rooms.get(&room) else {
                        continue;
                    };
                    let entry = changed.entry(room).or_insert(*held);
                    entry.oldest = entry.oldest.max(seq + 1);
                }
                drop(gone);
                let mut upsert =
                    tx.prepare_cached("UPDATE rooms SET oldest_seq = ?2 WHERE name = ?1")?;
                for (room, row) in &changed {
                    upsert.execute(params![room, row.oldest as i64])?;
                }
            }
            // Rooms with no events keep only their last seq, and at most
            // MAX_FORGOTTEN of them: past that the lowest seqs go.
            let mut forgotten: Vec<(&String, u64)> = self
                .rooms
                .iter()
                .filter(|(name, row)| {
                    changed.get(*name).unwrap_or(row).oldest
                        > changed.get(*name).unwrap_or(row).last
                })
                .map(|(name, row)| (name, row.last))
                .collect();
            if forgotten.len() > MAX_FORGOTTEN {
                forgotten.sort_unstable_by_key(|(_, last)| *last);
                let mut forget = tx.prepare_cached("DELETE FROM rooms WHERE name = ?1")?;
                for (name, _) in &forgotten[..forgotten.len() - MAX_FORGOTTEN] {
                    forget.execute([name])?;
                    dropped.push((*name).clone());
                }
            }
            tx.execute(
                "DELETE FROM keys WHERE at_ms <= ?1",
                [now.saturating_sub(KEY_WINDOW_MS) as i64],
            )?;
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM keys", [], |row| row.get(0))?;
            if count as u64 > MAX_KEYS {
                tx.execute(
                    "DELETE FROM keys WHERE key IN (SELECT key FROM keys ORDER BY at_ms LIMIT ?1)",
                    [count - MAX_KEYS as i64],
                )?;
            }
            tx.commit()
        })();
        outcome.map_err(|e| EngineError::new(format!("the store cannot write: {e}")))?;
        let mut rooms = Vec::with_capacity(changed.len());
        for (room, row) in changed {
            self.rooms.insert(room.clone(), row);
            rooms.push((room, row.oldest));
        }
        for room in dropped {
            self.rooms.remove(&room);
        }
        Ok(rooms)
    }

    /// Copies the log into the database file and lets the log start
    /// again from its start (overwriting, not growing the file). Run by the store thread's tick rather than inside a commit
    /// (SQLite's default), so no publish waits for it.
    pub fn checkpoint(&mut self) -> Result<(), EngineError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .map_err(|e| EngineError::new(format!("the store cannot checkpoint: {e}")))
    }

    /// A write and its sync, to see whether the disk takes writes again.
    /// The log is emptied first (its file cut to nothing), so the write
    /// must find new room on the disk, as a commit of events would.
    pub fn probe(&mut self) -> Result<(), EngineError> {
        let mut run = || -> rusqlite::Result<()> {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            let tx = self.conn.transaction()?;
            // Several pages, more than a commit of a few events needs;
            // removed in the same commit.
            tx.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('probe', ?1)",
                [" ".repeat(64 << 10)],
            )?;
            tx.execute("DELETE FROM meta WHERE name = 'probe'", [])?;
            injected_failure(self.fail_writes_while.as_deref())?;
            tx.commit()
        };
        run().map_err(|e| EngineError::new(format!("the store cannot write: {e}")))
    }
}

/// A full disk, as SQLite reports it, while the fault hook's file exists.
fn injected_failure(while_exists: Option<&Path>) -> rusqlite::Result<()> {
    match while_exists {
        Some(path) if path.exists() => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some(format!(
                "database or disk is full (injected: {} exists)",
                path.display()
            )),
        )),
        _ => Ok(()),
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Whether `seq` may be stored next in `room`, whose row is `row`, given
/// the rooms whose appends were `refused`.
fn follows(
    refused: &HashMap<String, u64>,
    room: &str,
    seq: u64,
    row: Option<RoomRow>,
) -> Result<(), EngineError> {
    if let Some(&refused) = refused.get(room)
        && seq != refused
    {
        return Err(EngineError::new(format!(
            "room `{room}`: seq {seq} follows seq {refused}, which the store could not take"
        )));
    }
    match row {
        Some(row) if seq != row.last + 1 => Err(EngineError::new(format!(
            "room `{room}`: seq {seq} does not follow the stored seq {}",
            row.last
        ))),
        _ => Ok(()),
    }
}
