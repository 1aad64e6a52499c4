//! The device database's schema: numbered migrations, applied in order, each in a transaction;
//! the version lives in `PRAGMA user_version`. Shipped steps are never edited, only appended.

use rusqlite::Connection;

use crate::error::Result;

/// The migration steps; step `i` brings the schema to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("sql/001_init.sql"),
    include_str!("sql/002_sync.sql"),
    include_str!("sql/003_deferred_index.sql"),
    include_str!("sql/004_link_pending.sql"),
    include_str!("sql/005_device_key.sql"),
    include_str!("sql/006_offered.sql"),
    include_str!("sql/007_own_floor.sql"),
    include_str!("sql/008_outbox_entity.sql"),
    include_str!("sql/009_server_ca.sql"),
    include_str!("sql/010_village_names.sql"),
    include_str!("sql/011_watch_hits_resend.sql"),
];

/// The schema version this build writes.
pub(crate) const VERSION: usize = MIGRATIONS.len();

/// Brings the database up to the current version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let steps = baylink_sync::schema::steps_to_run(current, VERSION).map_err(|too_new| {
        crate::error::Error::SchemaTooNew {
            found: too_new.found,
            known: too_new.known,
        }
    })?;
    for i in steps {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[i])?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_schema ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn migrating_twice_is_a_no_op_and_step_by_step_equals_fresh() {
        let mut fresh = Connection::open_in_memory().unwrap();
        migrate(&mut fresh).unwrap();
        migrate(&mut fresh).unwrap();
        let stepped = Connection::open_in_memory().unwrap();
        for (i, step) in MIGRATIONS.iter().enumerate() {
            stepped.execute_batch(step).unwrap();
            stepped
                .pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        assert_eq!(schema_of(&fresh), schema_of(&stepped));
        let v: i64 = fresh
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION as i64);
    }

    #[test]
    fn a_version_1_database_with_data_upgrades_and_keeps_it() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1i64).unwrap();
        conn.execute("INSERT INTO device (id, node) VALUES (1, 'n')", [])
            .unwrap();
        migrate(&mut conn).unwrap();
        let node: String = conn
            .query_row("SELECT node FROM device", [], |r| r.get(0))
            .unwrap();
        let max: i64 = conn
            .query_row("SELECT max_remote_hlc FROM device", [], |r| r.get(0))
            .unwrap();
        assert_eq!((node.as_str(), max), ("n", 0));
    }

    #[test]
    fn a_phone_upgraded_from_version_6_asks_for_every_value_it_wrote_so_far() {
        let mut conn = Connection::open_in_memory().unwrap();
        for step in &MIGRATIONS[..6] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 6i64).unwrap();
        // It may have dropped records before it kept track: none of its values is taken as held.
        conn.execute(
            "INSERT INTO device (id, node, next_counter) VALUES (1, 'n', 42)",
            [],
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let floor: i64 = conn
            .query_row("SELECT own_floor FROM device", [], |r| r.get(0))
            .unwrap();
        assert_eq!(floor, 41);
    }

    #[test]
    fn a_database_from_a_newer_app_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", (VERSION + 1) as i64)
            .unwrap();
        assert!(migrate(&mut conn).is_err());
    }
}
