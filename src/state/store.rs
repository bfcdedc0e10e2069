//! Where the live context is kept durably. The embedded default is a redb file: every
//! change is committed (fsync) before the caller is told it happened, and a second
//! process on the same file is refused. A fleet backend replaces it behind [`Store`].

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable as _, TableDefinition};

use super::{Change, Event, Record, Table};

/// Where the embedded store lives unless `state.path` says otherwise.
pub fn default_path() -> Option<PathBuf> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("XDG_STATE_HOME")
        .or_else(|| from("HOME").map(|home| home.join(".local/state")))
        .map(|dir| dir.join("leash").join("state.redb"))
}

/// What a store holds at start: every record and the last sequence number.
#[derive(Debug, Default)]
pub struct Stored {
    pub seq: u64,
    pub records: Vec<Record>,
}

/// The contract a state backend keeps. Sequence numbers grow by one per change and
/// are never reused, so a watcher (or a peer in a fleet) can ask for what it missed.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Every record kept, and the sequence number of the last change.
    fn load(&self) -> Result<Stored, StoreError>;
    /// Makes `changes`, made by `by` at `at` (Unix seconds), durable as one unit, and
    /// returns the sequence number of the last. Nothing is applied when this fails.
    fn commit(&self, changes: &[Change], by: &str, at: i64) -> Result<u64, StoreError>;
    /// Replaces `expected` with `next` (same key) as one atomic step, only if the store
    /// still holds exactly `expected`: a one-shot approval is spent once, however many
    /// Checks (or, in a fleet, sidecars) race for it. `None` when it no longer held.
    fn swap(
        &self,
        expected: &Record,
        next: &Record,
        by: &str,
        at: i64,
    ) -> Result<Option<u64>, StoreError>;
    /// The changes after `seq`, oldest first, as far back as the feed reaches; `None`
    /// when `seq` is older than the feed keeps.
    fn changes_since(&self, seq: u64) -> Result<Option<Vec<Event>>, StoreError>;
    /// Where the state lives, for logs.
    fn describe(&self) -> String;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{path}: the state store is in use by another process; give each leash its own state.path"
    )]
    Locked { path: PathBuf },
    #[error("{path}: cannot open the state store: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("{path}: cannot create its folder: {source}")]
    Folder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store: {0}")]
    Io(Box<redb::Error>),
    #[error("state store: cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("state store: table {table}, key {key:?}: unreadable record: {why}")]
    Corrupt {
        table: &'static str,
        key: String,
        why: String,
    },
}

fn io(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Io(Box::new(err.into()))
}

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FEED: TableDefinition<u64, &[u8]> = TableDefinition::new("feed");
const SEQ: &str = "seq";

fn table(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}

/// The embedded store: one redb file.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    /// How many changes the feed keeps for watchers that fell behind.
    feed_len: u64,
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, creating its folder private to this user.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt as _;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Folder {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        let db = Database::create(path).map_err(|err| match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.to_owned(),
            },
            other => StoreError::Open {
                path: path.to_owned(),
                source: Box::new(other.into()),
            },
        })?;
        let tx = db.begin_write().map_err(io)?;
        for t in Table::ALL {
            tx.open_table(table(t)).map_err(io)?;
        }
        tx.open_table(META).map_err(io)?;
        tx.open_table(FEED).map_err(io)?;
        tx.commit().map_err(io)?;
        Ok(Self {
            db,
            path: path.to_owned(),
            feed_len: 65_536,
        })
    }

    /// Writes `changes` in one transaction, fsynced on commit; with `expect`, only if
    /// the key holds exactly those bytes, read inside the same transaction.
    fn write(
        &self,
        changes: &[Change],
        by: &str,
        at: i64,
        expect: Option<(&super::Key, &[u8])>,
    ) -> Result<Option<u64>, StoreError> {
        let by: std::sync::Arc<str> = std::sync::Arc::from(by);
        let tx = self.db.begin_write().map_err(io)?;
        if let Some((key, bytes)) = expect {
            let held = tx
                .open_table(table(key.table))
                .map_err(io)?
                .get(key.id.as_str())
                .map_err(io)?
                .map(|v| v.value().to_vec());
            if held.as_deref() != Some(bytes) {
                tx.abort().map_err(io)?;
                return Ok(None);
            }
        }
        let mut seq;
        {
            let mut meta = tx.open_table(META).map_err(io)?;
            seq = meta.get(SEQ).map_err(io)?.map_or(0, |v| v.value());
            let mut feed = tx.open_table(FEED).map_err(io)?;
            for change in changes {
                seq += 1;
                let key = change.key();
                let mut t = tx.open_table(table(key.table)).map_err(io)?;
                match change {
                    Change::Put(record) => {
                        let bytes = serde_json::to_vec(record)?;
                        t.insert(key.id.as_str(), bytes.as_slice()).map_err(io)?;
                    }
                    Change::Delete(key) => {
                        t.remove(key.id.as_str()).map_err(io)?;
                    }
                }
                let bytes = serde_json::to_vec(&Event {
                    seq,
                    at,
                    by: by.clone(),
                    change: change.clone(),
                })?;
                feed.insert(seq, bytes.as_slice()).map_err(io)?;
            }
            meta.insert(SEQ, seq).map_err(io)?;
            if let Some(oldest) = seq.checked_sub(self.feed_len) {
                feed.retain_in(..=oldest, |_, _| false).map_err(io)?;
            }
        }
        tx.commit().map_err(io)?;
        Ok(Some(seq))
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Stored, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let seq = tx
            .open_table(META)
            .map_err(io)?
            .get(SEQ)
            .map_err(io)?
            .map_or(0, |v| v.value());
        let mut records = Vec::new();
        for t in Table::ALL {
            for entry in tx.open_table(table(t)).map_err(io)?.iter().map_err(io)? {
                let (key, value) = entry.map_err(io)?;
                let record: Record =
                    serde_json::from_slice(value.value()).map_err(|e| StoreError::Corrupt {
                        table: t.name(),
                        key: key.value().to_owned(),
                        why: e.to_string(),
                    })?;
                records.push(record);
            }
        }
        Ok(Stored { seq, records })
    }

    fn commit(&self, changes: &[Change], by: &str, at: i64) -> Result<u64, StoreError> {
        self.write(changes, by, at, None)
            .map(|seq| seq.unwrap_or_default())
    }

    fn swap(
        &self,
        expected: &Record,
        next: &Record,
        by: &str,
        at: i64,
    ) -> Result<Option<u64>, StoreError> {
        let expected = serde_json::to_vec(expected)?;
        self.write(
            &[Change::Put(next.clone())],
            by,
            at,
            Some((&next.key(), &expected)),
        )
    }

    fn changes_since(&self, since: u64) -> Result<Option<Vec<Event>>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let feed = tx.open_table(FEED).map_err(io)?;
        let oldest = feed.first().map_err(io)?.map(|(k, _)| k.value());
        if oldest.is_some_and(|oldest| oldest > since.saturating_add(1)) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for entry in feed.range(since.saturating_add(1)..).map_err(io)? {
            let (seq, bytes) = entry.map_err(io)?;
            let event: Event =
                serde_json::from_slice(bytes.value()).map_err(|e| StoreError::Corrupt {
                    table: "feed",
                    key: seq.value().to_string(),
                    why: e.to_string(),
                })?;
            out.push(event);
        }
        Ok(Some(out))
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
