//! Resource definitions, pipelines, resources and their version snapshots.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, Store, Tx};
use crate::conveyor::{Pipeline, Resource, ResourceDefinition};
use crate::result::RunResult;

fn json_row<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<T>> {
    let json: Option<String> = conn
        .prepare_cached(sql)?
        .query_row(params, |r| r.get(0))
        .optional()?;
    Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
}

fn json_rows<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<T>> {
    let rows: Vec<String> = conn
        .prepare_cached(sql)?
        .query_map(params, |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows
        .iter()
        .map(|j| serde_json::from_str(j))
        .collect::<std::result::Result<_, _>>()?)
}

impl Store {
    // ---- resource definitions ----

    /// Reads a definition.
    pub fn definition(&self, name: &str) -> Result<Option<ResourceDefinition>> {
        self.read(|c| json_row(c, "SELECT json FROM definitions WHERE name = ?1", [name]))
    }

    /// Definitions by name, a page at a time: at most `limit`, named after `after`.
    pub fn definitions(&self, limit: u32, after: &str) -> Result<Vec<ResourceDefinition>> {
        self.read(|c| {
            json_rows(
                c,
                "SELECT json FROM definitions WHERE name > ?1 ORDER BY name LIMIT ?2",
                params![after, limit],
            )
        })
    }

    /// Inserts a definition; `false` when the name is taken.
    pub fn insert_definition(&self, def: &ResourceDefinition) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO definitions (name, json) VALUES (?1, ?2)",
                params![def.name, serde_json::to_string(def)?],
            )?;
            Ok(n == 1)
        })
    }

    /// Inserts or replaces a definition; `true` when it already existed.
    pub fn upsert_definition(&self, def: &ResourceDefinition) -> Result<bool> {
        self.write(|tx| {
            let existed = tx
                .query_row(
                    "SELECT 1 FROM definitions WHERE name = ?1",
                    [&def.name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            tx.execute(
                "INSERT OR REPLACE INTO definitions (name, json) VALUES (?1, ?2)",
                params![def.name, serde_json::to_string(def)?],
            )?;
            Ok(existed)
        })
    }

    /// Replaces the definition stored under `name`; `false` when there is none.
    pub fn replace_definition(&self, name: &str, def: &ResourceDefinition) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE definitions SET json = ?2 WHERE name = ?1",
                params![name, serde_json::to_string(def)?],
            )?;
            Ok(n == 1)
        })
    }

    /// Deletes a definition; `false` when there was none.
    pub fn delete_definition(&self, name: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM definitions WHERE name = ?1", [name])? == 1))
    }

    // ---- pipelines ----

    /// Reads a pipeline.
    pub fn pipeline(&self, name: &str) -> Result<Option<Pipeline>> {
        self.read(|c| json_row(c, "SELECT json FROM pipelines WHERE name = ?1", [name]))
    }

    /// Every pipeline, by name.
    pub fn pipelines(&self) -> Result<Vec<Pipeline>> {
        self.read(|c| json_rows(c, "SELECT json FROM pipelines ORDER BY name", []))
    }

    /// Inserts a pipeline; `false` when the name is taken.
    pub fn insert_pipeline(&self, p: &Pipeline) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO pipelines (name, json) VALUES (?1, ?2)",
                params![p.name, serde_json::to_string(p)?],
            )?;
            Ok(n == 1)
        })
    }

    /// Replaces a pipeline; `false` when there is none of that name.
    pub fn replace_pipeline(&self, p: &Pipeline) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE pipelines SET json = ?2 WHERE name = ?1",
                params![p.name, serde_json::to_string(p)?],
            )?;
            Ok(n == 1)
        })
    }

    /// Deletes a pipeline; `false` when there was none. Runs already started keep the steps
    /// they started with.
    pub fn delete_pipeline(&self, name: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM pipelines WHERE name = ?1", [name])? == 1))
    }

    // ---- resources ----

    /// Reads the current state of a resource.
    pub fn resource(&self, kind: &str, name: &str) -> Result<Option<Resource>> {
        self.read(|c| read(c, kind, name))
    }

    /// The resources of one type by name, a page at a time: at most `limit`, named after
    /// `after` (the primary key's order, so a page costs the same however many are stored).
    pub fn resources_of(&self, kind: &str, limit: u32, after: &str) -> Result<Vec<Resource>> {
        self.read(|c| {
            json_rows(
                c,
                "SELECT json FROM resources WHERE type = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                params![kind, after, limit],
            )
        })
    }

    /// Reads one version snapshot of a resource.
    pub fn resource_version(
        &self,
        kind: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<Resource>> {
        self.read(|c| {
            json_row(
                c,
                "SELECT json FROM resource_versions WHERE type = ?1 AND name = ?2 AND version = ?3",
                [kind, name, version],
            )
        })
    }
}

/// The current state of a resource.
pub fn read(conn: &Connection, kind: &str, name: &str) -> Result<Option<Resource>> {
    json_row(
        conn,
        "SELECT json FROM resources WHERE type = ?1 AND name = ?2",
        [kind, name],
    )
}

/// Inserts a new resource and its version snapshot; `false` (and nothing written) when the
/// name is taken for that type.
pub fn insert(tx: &Tx<'_>, res: &Resource) -> Result<bool> {
    let json = serde_json::to_string(res)?;
    let n = tx.execute(
        "INSERT OR IGNORE INTO resources (type, name, json) VALUES (?1, ?2, ?3)",
        params![res.resource, res.name, json],
    )?;
    if n == 0 {
        return Ok(false);
    }
    snapshot(tx, res, &json)?;
    Ok(true)
}

/// Stores a resource's new state and its version snapshot.
pub fn replace(tx: &Tx<'_>, res: &Resource) -> Result<()> {
    let json = serde_json::to_string(res)?;
    tx.execute(
        "UPDATE resources SET json = ?3 WHERE type = ?1 AND name = ?2",
        params![res.resource, res.name, json],
    )?;
    snapshot(tx, res, &json)
}

/// Deletes a resource's current state; its version snapshots stay.
pub fn delete(tx: &Tx<'_>, kind: &str, name: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM resources WHERE type = ?1 AND name = ?2",
        [kind, name],
    )?;
    Ok(())
}

fn snapshot(tx: &Tx<'_>, res: &Resource, json: &str) -> Result<()> {
    let version = res.metadata.get("version").cloned().unwrap_or_default();
    tx.execute(
        "INSERT OR REPLACE INTO resource_versions (type, name, version, json) VALUES (?1, ?2, ?3, ?4)",
        params![res.resource, res.name, version, json],
    )?;
    Ok(())
}

/// Writes `metadata["driverresults.<driver>"]` on the resource, as Conveyor's pipeline
/// engine does, without bumping its version (not for a delete: the resource is gone).
///
/// SQLite merges the one key into the stored JSON (`json_patch`, RFC 7396) rather than the
/// resource being read, decoded, encoded and written back here: this runs in every result's
/// write, on the store's one writer thread.
pub fn record_driver_result(tx: &Tx<'_>, result: &RunResult) -> Result<()> {
    if result.event == "delete" {
        return Ok(());
    }
    tx.execute(
        "UPDATE resources
         SET json = json_patch(json, json_object('metadata', json_object(?3, ?4)))
         WHERE type = ?1 AND name = ?2",
        params![
            result.resource_type,
            result.resource_name,
            format!("driverresults.{}", result.driver),
            serde_json::to_string(&result.driver_result())?,
        ],
    )?;
    Ok(())
}
