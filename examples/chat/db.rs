//! The message store: one SQLite file shared by every worker (WAL mode, so
//! readers never wait for the writer; `busy_timeout`, so writers of different
//! workers queue instead of failing). Every query runs on tokio's blocking
//! pool, never on a worker's event loop.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension};

/// How long a statement waits for another worker's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub content: String,
    pub nick: Option<String>,
}

/// The outcome of [`Db::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// Stored with this id.
    New(i64),
    /// A message with this client offset is already stored (a retry).
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A worker's connection to the shared database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// Inserts of this worker run in the order they were asked for (tokio's
    /// mutex is fair): a client's messages get increasing ids.
    writes: Arc<tokio::sync::Mutex<()>>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and its schema.
    /// Blocking: call it from a blocking context.
    pub fn open(path: &Path) -> Result<Db, rusqlite::Error> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Several workers may open a new file at once: switching it to WAL takes
        // an exclusive lock, so retry while another worker holds it.
        let mut tries = 0;
        loop {
            let mode: Result<String, _> =
                conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0));
            match mode {
                Ok(_) => break,
                Err(e) if tries < 50 && is_busy(&e) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // One worker at a time creates or upgrades the schema.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                client_offset TEXT UNIQUE,
                content TEXT,
                nick TEXT
            );",
        )?;
        // A database made by the tutorial's Node server has no nick column.
        let has_nick: Option<String> = tx
            .query_row(
                "SELECT name FROM pragma_table_info('messages') WHERE name = 'nick'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if has_nick.is_none() {
            tx.execute_batch("ALTER TABLE messages ADD COLUMN nick TEXT;")?;
        }
        tx.commit()?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            writes: Arc::default(),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, DbError> {
        let conn = self.conn.clone();
        let res = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn)
        })
        .await?;
        Ok(res?)
    }

    /// Waits for this worker's earlier inserts; hold the guard until the
    /// outcome was acted on (broadcast) to keep that in order too.
    pub async fn write_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.writes.clone().lock_owned().await
    }

    /// Stores a message unless one with the same `client_offset` exists.
    pub async fn insert(
        &self,
        content: String,
        client_offset: String,
        nick: Option<String>,
    ) -> Result<Insert, DbError> {
        self.with(move |conn| {
            let res = conn.execute(
                "INSERT INTO messages (content, client_offset, nick) VALUES (?1, ?2, ?3)",
                params![content, client_offset, nick],
            );
            match res {
                Ok(_) => Ok(Insert::New(conn.last_insert_rowid())),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                {
                    Ok(Insert::Duplicate)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Up to `limit` messages with an id above `after`, in id order.
    pub async fn after(&self, after: i64, limit: usize) -> Result<Vec<Row>, DbError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, content, nick FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    // The tutorial's schema allows NULL content.
                    content: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    nick: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::DatabaseBusy || f.code == ErrorCode::DatabaseLocked
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test gets its own directory: tests run in parallel in one process.
    fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        (dir, path)
    }

    #[tokio::test]
    async fn inserts_once_per_client_offset_and_reads_in_order() {
        let (_dir, path) = temp_db();
        let db = Db::open(&path).unwrap();
        let second = Db::open(&path).unwrap(); // another worker
        assert_eq!(
            db.insert("a".into(), "c-0".into(), Some("ann".into()))
                .await
                .unwrap(),
            Insert::New(1)
        );
        assert_eq!(
            second.insert("a".into(), "c-0".into(), None).await.unwrap(),
            Insert::Duplicate
        );
        assert_eq!(
            second.insert("b".into(), "c-1".into(), None).await.unwrap(),
            Insert::New(2)
        );
        let rows = db.after(0, 10).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].content, "a");
        assert_eq!(rows[0].nick.as_deref(), Some("ann"));
        assert_eq!(db.after(1, 10).await.unwrap()[0].id, 2);
        assert!(db.after(2, 10).await.unwrap().is_empty());
        assert_eq!(db.after(0, 1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn upgrades_the_tutorial_schema() {
        let (_dir, path) = temp_db();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                 client_offset TEXT UNIQUE, content TEXT);
                 INSERT INTO messages (client_offset, content) VALUES ('x-0', 'old');",
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let rows = db.after(0, 10).await.unwrap();
        assert_eq!(rows[0].content, "old");
        assert_eq!(rows[0].nick, None);
    }
}
