//! Retention: removing finished runs (with their steps, results and log lines) and log lines
//! past what `[retention]` keeps. One mechanism for both: walk the table oldest first by its
//! row order (creation order), a small batch per transaction, and stop at the first row that
//! is to be kept by age. A run that is not over is never removed, nor are its lines. Each
//! batch is short, so the API's requests wait at most one batch for the store.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::config::Keep;

/// The statuses of a run that is over, as stored.
const FINAL: &str = "('succeeded', 'failed', 'superseded', 'cancelled', 'no-driver')";

/// Rows one transaction removes at most.
pub const BATCH: usize = 500;

impl Store {
    /// Removes up to [`BATCH`] finished runs outside `keep`, oldest first, with their steps,
    /// results and log lines. Returns how many runs were removed; fewer than [`BATCH`] means
    /// none is left to remove.
    pub fn prune_runs(&self, keep: Keep, now: time::OffsetDateTime) -> Result<usize> {
        self.write(|tx| {
            // The newest row of the table that may go (by count), or the cutoff time (by age).
            let Some((below_rowid, cutoff)) = limits(tx, "runs", "rowid", keep, now)? else {
                return Ok(0);
            };
            let candidates: Vec<(String, Option<String>, String)> = tx
                .prepare_cached(&format!(
                    "SELECT run_id, finished_at, created_at FROM runs
                     WHERE rowid < ?1 AND status IN {FINAL} ORDER BY rowid LIMIT ?2"
                ))?
                .query_map(params![below_rowid, BATCH as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut removed = 0;
            for (run_id, finished, created) in candidates {
                if let Some(cutoff) = &cutoff {
                    // Rows are in creation order: a run created after the cutoff, and every
                    // row after it, is to be kept.
                    if created.as_str() >= cutoff.as_str() {
                        break;
                    }
                    if finished.as_deref().is_none_or(|f| f >= cutoff.as_str()) {
                        continue;
                    }
                }
                remove_run(tx, &run_id)?;
                removed += 1;
            }
            Ok(removed)
        })
    }

    /// Removes up to [`BATCH`] log lines outside `keep`, oldest first, none of a run that is
    /// not over. Returns how many; fewer than [`BATCH`] means none is left to remove.
    pub fn prune_logs(&self, keep: Keep, now: time::OffsetDateTime) -> Result<usize> {
        self.write(|tx| {
            let Some((below_seq, cutoff)) = limits(tx, "logs", "seq", keep, now)? else {
                return Ok(0);
            };
            // The runs still going keep their lines: few at a time, and found by the status
            // index.
            let lines: Vec<(i64, String)> = tx
                .prepare_cached(
                    "SELECT seq, timestamp FROM logs WHERE seq < ?1 AND run_id NOT IN
                       (SELECT run_id FROM runs WHERE status IN ('queued', 'running'))
                     ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![below_seq, BATCH as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut delete = tx.prepare_cached("DELETE FROM logs WHERE seq = ?1")?;
            let mut removed = 0;
            for (seq, timestamp) in lines {
                // Lines are stored in time order: the first young one ends the walk.
                if cutoff
                    .as_ref()
                    .is_some_and(|c| timestamp.as_str() >= c.as_str())
                {
                    break;
                }
                removed += delete.execute([seq])?;
            }
            Ok(removed)
        })
    }
}

/// What a pass over `table` (in `order`, its row order) may remove: rows before the first
/// returned row number (by count: the newest `n` are kept) and, by age, finished before the
/// returned cutoff. `None` when the table holds no more than a count keeps.
fn limits(
    tx: &super::Tx<'_>,
    table: &str,
    order: &str,
    keep: Keep,
    now: time::OffsetDateTime,
) -> Result<Option<(i64, Option<String>)>> {
    match keep {
        Keep::Count(n) => {
            let boundary: Option<i64> = tx
                .prepare_cached(&format!(
                    "SELECT {order} FROM {table} ORDER BY {order} DESC LIMIT 1 OFFSET ?1"
                ))?
                .query_row([n.saturating_sub(1)], |r| r.get(0))
                .optional()?;
            Ok(boundary.map(|b| (b, None)))
        }
        Keep::Age(age) => Ok(Some((i64::MAX, Some(cutoff(now, age))))),
    }
}

/// The time `age` before `now`, as the store writes times (RFC 3339, UTC, fixed width, so
/// that they compare as strings).
fn cutoff(now: time::OffsetDateTime, age: std::time::Duration) -> String {
    let age = time::Duration::try_from(age).unwrap_or(time::Duration::MAX);
    crate::clock::rfc3339(
        now.checked_sub(age)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

/// Removes a finished run and what belongs to it.
fn remove_run(tx: &super::Tx<'_>, run_id: &str) -> Result<()> {
    // Results and steps before their run, which is how they are found.
    for sql in [
        "DELETE FROM logs WHERE run_id = ?1",
        "DELETE FROM results WHERE run = (SELECT seq FROM runs WHERE run_id = ?1)",
        "DELETE FROM run_steps WHERE run = (SELECT seq FROM runs WHERE run_id = ?1)",
        "DELETE FROM runs WHERE run_id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([run_id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_cutoff_compares_as_the_stored_times_do() {
        let now = time::macros::datetime!(2026-12-01 12:00:00 UTC);
        let c = cutoff(now, Duration::from_secs(86_400));
        assert_eq!(c, "2026-11-30T12:00:00.000000Z");
        assert!("2026-11-30T11:59:59.999999Z" < c.as_str());
        assert!("2026-11-30T12:00:00.000001Z" > c.as_str());
    }

    /// A store holding runs `(id, status, created and finished on the day of December)` with
    /// one log line each, stamped with its run's creation.
    fn store_with(runs: &[(&str, &str, u8, Option<u8>)]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let day = |d: u8| format!("2026-12-{d:02}T00:00:00.000000Z");
        store
            .write(|tx| {
                for (id, status, created, finished) in runs {
                    tx.execute(
                        "INSERT INTO runs (run_id, resource_type, resource_name, event, status,
                             created_at, finished_at) VALUES (?1, 't', ?1, 'create', ?2, ?3, ?4)",
                        params![id, status, day(*created), finished.map(day)],
                    )?;
                    tx.execute(
                        "INSERT INTO logs (run_id, driver, pipeline, timestamp, message, labels)
                         VALUES (?1, 'd', '', ?2, 'line', '{}')",
                        params![id, day(*created)],
                    )?;
                }
                Ok(())
            })
            .unwrap();
        (dir, store)
    }

    fn left(store: &Store, table: &str) -> Vec<String> {
        store
            .read(|c| {
                let mut stmt = c.prepare(&format!("SELECT run_id FROM {table} ORDER BY rowid"))?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .unwrap()
    }

    #[test]
    fn by_age_finished_runs_go_and_running_and_young_ones_stay() {
        let (_d, s) = store_with(&[
            ("old", "succeeded", 1, Some(1)),
            ("old-running", "running", 1, None),
            ("old-failed", "failed", 2, Some(2)),
            ("young", "failed", 9, Some(9)),
        ]);
        let now = time::macros::datetime!(2026-12-10 00:00:00 UTC);
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(s.prune_runs(Keep::Age(week), now).unwrap(), 2);
        assert_eq!(left(&s, "runs"), ["old-running", "young"]);
        // The removed runs' lines went with them.
        assert_eq!(left(&s, "logs"), ["old-running", "young"]);
        assert_eq!(s.prune_runs(Keep::Age(week), now).unwrap(), 0);
    }

    #[test]
    fn by_age_old_lines_go_but_not_a_running_runs() {
        let (_d, s) = store_with(&[
            ("old", "succeeded", 1, Some(1)),
            ("old-running", "running", 1, None),
            ("young", "succeeded", 9, Some(9)),
        ]);
        let now = time::macros::datetime!(2026-12-10 00:00:00 UTC);
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(s.prune_logs(Keep::Age(week), now).unwrap(), 1);
        assert_eq!(left(&s, "logs"), ["old-running", "young"]);
        assert_eq!(left(&s, "runs").len(), 3, "log retention leaves runs alone");
    }

    #[test]
    fn by_count_the_newest_are_kept() {
        let (_d, s) = store_with(&[
            ("a", "succeeded", 1, Some(1)),
            ("b", "running", 2, None),
            ("c", "succeeded", 3, Some(3)),
            ("d", "succeeded", 4, Some(4)),
        ]);
        let now = time::macros::datetime!(2026-12-10 00:00:00 UTC);
        assert_eq!(s.prune_runs(Keep::Count(2), now).unwrap(), 1);
        assert_eq!(left(&s, "runs"), ["b", "c", "d"]);
        assert_eq!(s.prune_logs(Keep::Count(1), now).unwrap(), 1);
        assert_eq!(left(&s, "logs"), ["b", "d"]);
    }

    #[test]
    fn an_age_beyond_the_epoch_keeps_everything() {
        let now = time::macros::datetime!(2026-12-01 12:00:00 UTC);
        assert_eq!(cutoff(now, Duration::MAX), "1970-01-01T00:00:00.000000Z");
    }
}
