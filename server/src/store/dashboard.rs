//! The dashboard's figures: captures per day, each officer's progress, each device's last sync.

use std::collections::BTreeMap;

use baylink_domain::Date;

use crate::store::conn::{Conn, params};
use crate::store::error::StoreError;
use crate::store::places;
use crate::store::watch::not_merged_away;

/// The dashboard's figures for some villages, read in one snapshot.
#[derive(Clone, Debug)]
pub struct Overview {
    /// Records by (village, kind, review status).
    pub counts: Vec<(String, String, String, i64)>,
    /// Village names by code.
    pub names: BTreeMap<String, String>,
    /// Captures per day since the first day asked for.
    pub days: Vec<(String, i64)>,
    /// Records per officer.
    pub progress: Vec<Progress>,
    /// Officers' devices.
    pub devices: Vec<DeviceSync>,
    /// Open conflicts.
    pub conflicts: i64,
    /// Open alerts.
    pub alerts: i64,
}

/// Reads the dashboard's figures for these villages since a day.
pub fn overview(conn: &Conn<'_>, villages: &[String], since: Date) -> Result<Overview, StoreError> {
    Ok(Overview {
        counts: counts(conn, villages)?,
        names: places::stations(conn)?
            .into_iter()
            .flat_map(|s| s.villages)
            .collect(),
        days: captures_per_day(conn, villages, &since.to_string())?,
        progress: progress(conn, villages)?,
        devices: device_syncs(conn, villages)?,
        conflicts: open_conflicts(conn, villages)?,
        alerts: open_count(conn, villages)?,
    })
}

/// Captures per day (local dates `YYYY-MM-DD`) in these villages since `since`.
pub fn captures_per_day(
    conn: &Conn<'_>,
    villages: &[String],
    since: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT substr(created_at, 1, 10) AS day, COUNT(*) FROM summary
         WHERE village IN (SELECT value FROM json_each(?1)) AND created_at >= ?2 AND deleted = 0
         GROUP BY day ORDER BY day",
    )?;
    let rows = stmt.query_map(params![list, since], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One officer's work: records captured by review status.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Progress {
    /// Username.
    pub officer: String,
    /// Pending review.
    pub pending: i64,
    /// Approved.
    pub approved: i64,
    /// Returned.
    pub returned: i64,
}

/// Records per capturing officer in these villages, most first.
pub fn progress(conn: &Conn<'_>, villages: &[String]) -> Result<Vec<Progress>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT created_by,
                SUM(CASE WHEN COALESCE(review_status, 'pending') = 'pending' THEN 1 ELSE 0 END),
                SUM(CASE WHEN review_status = 'approved' THEN 1 ELSE 0 END),
                SUM(CASE WHEN review_status = 'returned' THEN 1 ELSE 0 END)
         FROM summary WHERE village IN (SELECT value FROM json_each(?1)) AND deleted = 0 AND created_by IS NOT NULL
         GROUP BY created_by ORDER BY COUNT(*) DESC, created_by",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok(Progress {
            officer: r.get(0)?,
            pending: r.get(1)?,
            approved: r.get(2)?,
            returned: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When an officer's device last synced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceSync {
    /// The officer.
    pub officer: String,
    /// The device's name.
    pub device: String,
    /// Last complete sync.
    pub last_sync_ms: Option<u64>,
    /// Revoked devices are shown as such.
    pub revoked: bool,
}

/// Devices of the officers of these villages, most recently synced first.
pub fn device_syncs(conn: &Conn<'_>, villages: &[String]) -> Result<Vec<DeviceSync>, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT a.username, d.name, d.last_sync_ms, d.revoked FROM device d JOIN account a ON a.id = d.account
         WHERE a.role = 'officer' AND EXISTS (SELECT 1 FROM account_village v WHERE v.account = a.id
             AND v.village IN (SELECT value FROM json_each(?1)))
         ORDER BY d.last_sync_ms IS NULL, d.last_sync_ms DESC, a.username, d.id",
    )?;
    let rows = stmt.query_map([list], |r| {
        Ok(DeviceSync {
            officer: r.get(0)?,
            device: r.get(1)?,
            last_sync_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
            revoked: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Record counts by village, kind and review status.
pub fn counts(
    conn: &Conn<'_>,
    villages: &[String],
) -> Result<Vec<(String, String, String, i64)>, StoreError> {
    let villages = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    let mut stmt = conn.prepare_cached(
        "SELECT village, kind, COALESCE(review_status, 'pending'), COUNT(*) FROM summary
         WHERE deleted = 0 AND village IN (SELECT value FROM json_each(?1))
         GROUP BY village, kind, review_status ORDER BY village, kind",
    )?;
    let rows = stmt.query_map([villages], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many conflicts on records of these villages are open.
pub fn open_conflicts(conn: &Conn<'_>, villages: &[String]) -> Result<i64, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    Ok(conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM conflict c WHERE c.settled_ms IS NULL AND {}",
            crate::store::scope::in_villages("c.entity", 1)
        ),
        [list],
        |r| r.get(0),
    )?)
}

/// How many alerts on persons in these villages are open.
pub fn open_count(conn: &Conn<'_>, villages: &[String]) -> Result<i64, StoreError> {
    let list = serde_json::to_string(villages).unwrap_or_else(|_| "[]".into());
    Ok(conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM alert l WHERE l.acknowledged_ms IS NULL
               AND {} AND {}",
            crate::store::scope::in_villages("l.entity", 1),
            not_merged_away(conn.dialect())
        ),
        [list],
        |r| r.get(0),
    )?)
}
