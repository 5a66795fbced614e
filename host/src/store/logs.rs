//! Log lines, in the order they were stored (their sequence number).

use rusqlite::params;

use super::{Result, Store};
use crate::conveyor::Log;

/// A stored log line and its sequence number (its position in the store, which is also
/// chronological order).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    /// The line's position; strictly increasing.
    pub seq: i64,
    /// The line.
    pub log: Log,
}

/// Which log lines to read; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only this run.
    pub run_id: Option<String>,
    /// Only this driver.
    pub driver: Option<String>,
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only lines after this sequence number.
    pub after_seq: Option<i64>,
    /// At most this many lines.
    pub limit: Option<u32>,
}

impl Store {
    /// Appends log lines in one transaction and returns them with their sequence numbers.
    /// The lines are handed to the writer at the call, so a write handed over after it
    /// commits no earlier (see [`Store::write_soon`]); the future resolves at the commit.
    pub fn append_logs(
        &self,
        lines: Vec<Log>,
    ) -> impl Future<Output = Result<Vec<StoredLog>>> + Send + 'static {
        self.write_soon(move |tx| {
            let mut out = Vec::with_capacity(lines.len());
            let mut stmt = tx.prepare_cached(
                "INSERT INTO logs (run_id, driver, pipeline, timestamp, message, labels)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for log in lines {
                stmt.execute(params![
                    log.runid,
                    log.driver,
                    log.pipeline,
                    log.timestamp,
                    log.message,
                    serde_json::to_string(&log.labels)?,
                ])?;
                out.push(StoredLog {
                    seq: tx.last_insert_rowid(),
                    log,
                });
            }
            Ok(out)
        })
    }

    /// Reads log lines in chronological (sequence) order.
    pub fn logs(&self, filter: &LogFilter) -> Result<Vec<StoredLog>> {
        let (mut conditions, values) = super::equal_to(
            &[
                ("run_id", filter.run_id.as_deref()),
                ("driver", filter.driver.as_deref()),
                ("pipeline", filter.pipeline.as_deref()),
            ],
            3,
        );
        conditions.push("seq > ?1".into());
        let sql = format!(
            "SELECT seq, run_id, driver, pipeline, timestamp, message, labels FROM logs
             WHERE {} ORDER BY seq LIMIT ?2",
            conditions.join(" AND ")
        );
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut params: Vec<&dyn rusqlite::ToSql> = Vec::new();
            let after = filter.after_seq.unwrap_or(0);
            let limit = filter.limit.map_or(-1, i64::from);
            params.push(&after);
            params.push(&limit);
            for v in &values {
                params.push(v);
            }
            let rows = stmt
                .query_map(params.as_slice(), |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Log {
                            runid: r.get(1)?,
                            driver: r.get(2)?,
                            pipeline: r.get(3)?,
                            timestamp: r.get(4)?,
                            message: r.get(5)?,
                            labels: Default::default(),
                        },
                        r.get::<_, String>(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, mut log, labels) in rows {
            log.labels = serde_json::from_str(&labels)?;
            out.push(StoredLog { seq, log });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn logs_filter_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db.sqlite")).unwrap();
        let line = |run: &str, driver: &str, msg: &str| Log {
            runid: run.into(),
            driver: driver.into(),
            pipeline: String::new(),
            timestamp: "t".into(),
            message: msg.into(),
            labels: Default::default(),
        };
        let stored = s
            .append_logs(vec![
                line("R", "b", "1"),
                line("R", "a", "2"),
                line("S", "a", "3"),
            ])
            .await
            .unwrap();
        let run = s
            .logs(&LogFilter {
                run_id: Some("R".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            run.iter()
                .map(|l| l.log.message.as_str())
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        let after = s
            .logs(&LogFilter {
                after_seq: Some(stored[0].seq),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(after.len(), 2);
        let page = s
            .logs(&LogFilter {
                after_seq: Some(stored[0].seq),
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, stored[1].seq);
    }
}
