//! The write-ahead log copied back into the database by a thread beside the writer, so that the
//! log starts over without holding pushes.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rusqlite::Connection;

use crate::store::error::StoreError;

/// Frames in the log past which the writer checkpoints in a commit.
pub(crate) const WRITER_CHECKPOINT: i64 = 200_000;

/// Frames in the log past which the checkpointer finishes its copy holding the writer.
pub(crate) const FINISH_UNDER_WRITER: i64 = 2_000;

/// Frames written during a copy below which writes count as light enough to finish under the
/// writer.
pub(crate) const FEW_FRAMES: i64 = 1_000;

/// Copies the write-ahead log back into the database from a connection and thread of its own,
/// a few times a second, until the database is closed. Left to the writer, a commit now and
/// then also did a checkpoint: a tenth of the time of an ingest, and the slowest pushes.
///
/// The bulk is copied beside the writer, but under a steady stream of writes such a copy never
/// catches up with the log's end, so the log is never started over: it grew to the writer's
/// limit (then 50,000 pages), whose checkpoint stalled one push for 0.2 s and every push queued
/// behind it. So when the log is long, the frames written during the copy are copied too, and
/// if they were few (pushes, not an ingest, whose writes would keep the writer waiting for a
/// checkpoint's sync) the rest is copied holding the writer, a few milliseconds, after which
/// the next write starts the log over.
pub(crate) fn checkpoint_beside(
    path: &Path,
    writer: std::sync::Weak<Mutex<Connection>>,
) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    // PASSIVE: never waits for the writer or readers; what it cannot copy now, it copies later.
    // The log's length it reports is the one at its start.
    // The log's length, and how many of its frames are in the database now.
    let checkpoint = move || -> rusqlite::Result<(i64, i64)> {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
    };
    std::thread::Builder::new()
        .name("checkpoint".into())
        .spawn(move || {
            let mut copied_before = 0;
            while writer.strong_count() > 0 {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let started = std::time::Instant::now();
                let result = checkpoint().and_then(|(log, copied)| {
                    let mut copied = copied;
                    if log > FINISH_UNDER_WRITER {
                        let (again, more) = checkpoint()?;
                        copied = more;
                        if again - log <= FEW_FRAMES
                            && let Some(writer) = writer.upgrade()
                        {
                            let _writing = writer.lock().unwrap_or_else(PoisonError::into_inner);
                            copied = checkpoint()?.1;
                        }
                    }
                    Ok(copied)
                });
                match result {
                    // Counted when it copied frames (a restarted log counts from zero again).
                    Ok(copied) => {
                        if copied != copied_before && copied > 0 {
                            crate::metrics::checkpointed(started.elapsed());
                        }
                        copied_before = copied;
                    }
                    Err(e) => tracing::warn!("checkpoint: {e}"),
                }
            }
        })
        .map_err(|e| StoreError::Backend(format!("checkpoint thread: {e}")))?;
    Ok(())
}
