//! Resource definitions, pipelines, resources and their version snapshots.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// The definitions last read, by name, for a store whose writes are all its own: every create
/// and update of a resource validates its spec against its type's definition, and a read
/// after a commit re-reads its pages from the WAL. Every write of a definition clears it
/// (after its commit, before its caller is answered) and moves its generation on, so that a
/// read that began before the write cannot cache what the write replaced.
#[derive(Default)]
pub(super) struct DefinitionCache {
    inner: Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    generation: u64,
    by_name: HashMap<String, Arc<ResourceDefinition>>,
}

/// The most definitions the cache holds; past this it starts again empty.
const CACHED_DEFINITIONS: usize = 1024;

impl DefinitionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached definition, or the generation to keep the one about to be read under.
    fn get(&self, name: &str) -> std::result::Result<Arc<ResourceDefinition>, u64> {
        let c = self.lock();
        c.by_name.get(name).cloned().ok_or(c.generation)
    }

    /// Keeps `def`, read after [`DefinitionCache::get`] gave `generation`, unless a
    /// definition was written since.
    fn keep(&self, generation: u64, name: &str, def: &Arc<ResourceDefinition>) {
        let mut c = self.lock();
        if c.generation == generation {
            if c.by_name.len() >= CACHED_DEFINITIONS {
                c.by_name.clear();
            }
            c.by_name.insert(name.to_string(), def.clone());
        }
    }

    fn cleared(&self) {
        let mut c = self.lock();
        c.generation += 1;
        c.by_name.clear();
    }
}

impl Store {
    // ---- resource definitions ----

    /// Reads a definition.
    pub fn definition(&self, name: &str) -> Result<Option<ResourceDefinition>> {
        Ok(self.shared_definition(name)?.map(Arc::unwrap_or_clone))
    }

    /// Reads a definition, shared: the same `Arc` until a definition is written, so that what
    /// is derived from it (a compiled schema) can be kept by its address.
    pub fn shared_definition(&self, name: &str) -> Result<Option<Arc<ResourceDefinition>>> {
        let read = |c: &Connection| {
            json_row::<ResourceDefinition>(
                c,
                "SELECT json FROM definitions WHERE name = ?1",
                [name],
            )
        };
        let Some(cache) = &self.definitions else {
            return Ok(self.read(read)?.map(Arc::new));
        };
        let generation = match cache.get(name) {
            Ok(def) => return Ok(Some(def)),
            Err(generation) => generation,
        };
        let def = self.read(read)?.map(Arc::new);
        if let Some(def) = &def {
            cache.keep(generation, name, def);
        }
        Ok(def)
    }

    /// Runs a write of definitions, then clears the cache of them, whatever the outcome (a
    /// failed commit may still have been applied by SQLite before it failed to report).
    fn write_definitions<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T> + Send) -> Result<T>
    where
        T: Send,
    {
        let out = self.write(f);
        if let Some(cache) = &self.definitions {
            cache.cleared();
        }
        out
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
        self.write_definitions(|tx| {
            let n = tx.execute(
                "INSERT OR IGNORE INTO definitions (name, json) VALUES (?1, ?2)",
                params![def.name, serde_json::to_string(def)?],
            )?;
            Ok(n == 1)
        })
    }

    /// Inserts or replaces a definition; `true` when it already existed.
    pub fn upsert_definition(&self, def: &ResourceDefinition) -> Result<bool> {
        self.write_definitions(|tx| {
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
        self.write_definitions(|tx| {
            let n = tx.execute(
                "UPDATE definitions SET json = ?2 WHERE name = ?1",
                params![name, serde_json::to_string(def)?],
            )?;
            Ok(n == 1)
        })
    }

    /// Deletes a definition; `false` when there was none.
    pub fn delete_definition(&self, name: &str) -> Result<bool> {
        self.write_definitions(|tx| {
            Ok(tx.execute("DELETE FROM definitions WHERE name = ?1", [name])? == 1)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, version: &str) -> ResourceDefinition {
        ResourceDefinition {
            id: String::new(),
            name: name.into(),
            description: String::new(),
            version: version.into(),
            schema: serde_json::json!({"type": "object"}),
        }
    }

    #[test]
    fn a_definition_read_again_is_shared_until_a_definition_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        assert!(store.shared_definition("a").unwrap().is_none());
        assert!(store.insert_definition(&def("a", "1")).unwrap());
        let first = store.shared_definition("a").unwrap().unwrap();
        let again = store.shared_definition("a").unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));

        assert!(store.replace_definition("a", &def("a", "2")).unwrap());
        let replaced = store.shared_definition("a").unwrap().unwrap();
        assert_eq!(replaced.version, "2");
        store.upsert_definition(&def("a", "3")).unwrap();
        assert_eq!(store.definition("a").unwrap().unwrap().version, "3");
        assert!(store.delete_definition("a").unwrap());
        assert!(store.shared_definition("a").unwrap().is_none());
    }

    #[test]
    fn a_definition_read_before_a_write_of_definitions_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        store.insert_definition(&def("a", "1")).unwrap();
        let cache = store.definitions.as_ref().unwrap();
        // A read that began (and read version 1) before the write, and ends after it.
        let generation = cache.get("a").unwrap_err();
        let stale = Arc::new(store.definition("a").unwrap().unwrap());
        store.replace_definition("a", &def("a", "2")).unwrap();
        cache.keep(generation, "a", &stale);
        assert_eq!(store.shared_definition("a").unwrap().unwrap().version, "2");
    }
}
