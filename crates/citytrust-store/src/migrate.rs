//! A small migration runner: each backend's numbered SQL files, applied in
//! order, each in its own transaction, recorded in `citytrust_migrations`.

use sqlx::{AnyPool, Row};

use crate::{Backend, Result, StoreError};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "foundation",
        sqlite: include_str!("../migrations/sqlite/0001_foundation.sql"),
        postgres: include_str!("../migrations/postgres/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "ledger",
        sqlite: include_str!("../migrations/sqlite/0002_ledger.sql"),
        postgres: include_str!("../migrations/postgres/0002_ledger.sql"),
    },
    Migration {
        version: 3,
        name: "content",
        sqlite: include_str!("../migrations/sqlite/0003_content.sql"),
        postgres: include_str!("../migrations/postgres/0003_content.sql"),
    },
    Migration {
        version: 4,
        name: "feedback",
        sqlite: include_str!("../migrations/sqlite/0004_feedback.sql"),
        postgres: include_str!("../migrations/postgres/0004_feedback.sql"),
    },
    Migration {
        version: 5,
        name: "governance",
        sqlite: include_str!("../migrations/sqlite/0005_governance.sql"),
        postgres: include_str!("../migrations/postgres/0005_governance.sql"),
    },
    Migration {
        version: 6,
        name: "identity",
        sqlite: include_str!("../migrations/sqlite/0006_identity.sql"),
        postgres: include_str!("../migrations/postgres/0006_identity.sql"),
    },
    Migration {
        version: 7,
        name: "ledger_index",
        sqlite: include_str!("../migrations/sqlite/0007_ledger_index.sql"),
        postgres: include_str!("../migrations/postgres/0007_ledger_index.sql"),
    },
    Migration {
        version: 8,
        name: "residents",
        sqlite: include_str!("../migrations/sqlite/0008_residents.sql"),
        postgres: include_str!("../migrations/postgres/0008_residents.sql"),
    },
    Migration {
        version: 9,
        name: "residents_lookups",
        sqlite: include_str!("../migrations/sqlite/0009_residents_lookups.sql"),
        postgres: include_str!("../migrations/postgres/0009_residents_lookups.sql"),
    },
    Migration {
        version: 10,
        name: "privacy_budgets",
        sqlite: include_str!("../migrations/sqlite/0010_privacy_budgets.sql"),
        postgres: include_str!("../migrations/postgres/0010_privacy_budgets.sql"),
    },
    Migration {
        version: 11,
        name: "witness",
        sqlite: include_str!("../migrations/sqlite/0011_witness.sql"),
        postgres: include_str!("../migrations/postgres/0011_witness.sql"),
    },
    Migration {
        version: 12,
        name: "cosignatures",
        sqlite: include_str!("../migrations/sqlite/0012_cosignatures.sql"),
        postgres: include_str!("../migrations/postgres/0012_cosignatures.sql"),
    },
    Migration {
        version: 13,
        name: "version_claims",
        sqlite: include_str!("../migrations/sqlite/0013_version_claims.sql"),
        postgres: include_str!("../migrations/postgres/0013_version_claims.sql"),
    },
    Migration {
        version: 14,
        name: "ledger_tiles",
        sqlite: include_str!("../migrations/sqlite/0014_ledger_tiles.sql"),
        postgres: include_str!("../migrations/postgres/0014_ledger_tiles.sql"),
    },
    Migration {
        version: 15,
        name: "data_requests",
        sqlite: include_str!("../migrations/sqlite/0015_data_requests.sql"),
        postgres: include_str!("../migrations/postgres/0015_data_requests.sql"),
    },
    Migration {
        version: 16,
        name: "consultations",
        sqlite: include_str!("../migrations/sqlite/0016_consultations.sql"),
        postgres: include_str!("../migrations/postgres/0016_consultations.sql"),
    },
    Migration {
        version: 17,
        name: "outcomes",
        sqlite: include_str!("../migrations/sqlite/0017_outcomes.sql"),
        postgres: include_str!("../migrations/postgres/0017_outcomes.sql"),
    },
    Migration {
        version: 18,
        name: "projects",
        sqlite: include_str!("../migrations/sqlite/0018_projects.sql"),
        postgres: include_str!("../migrations/postgres/0018_projects.sql"),
    },
    Migration {
        version: 19,
        name: "federation",
        sqlite: include_str!("../migrations/sqlite/0019_federation.sql"),
        postgres: include_str!("../migrations/postgres/0019_federation.sql"),
    },
    Migration {
        version: 20,
        name: "negotiations",
        sqlite: include_str!("../migrations/sqlite/0020_negotiations.sql"),
        postgres: include_str!("../migrations/postgres/0020_negotiations.sql"),
    },
    Migration {
        version: 21,
        name: "streams",
        sqlite: include_str!("../migrations/sqlite/0021_streams.sql"),
        postgres: include_str!("../migrations/postgres/0021_streams.sql"),
    },
    Migration {
        version: 22,
        name: "version_removal",
        sqlite: include_str!("../migrations/sqlite/0022_version_removal.sql"),
        postgres: include_str!("../migrations/postgres/0022_version_removal.sql"),
    },
    Migration {
        version: 23,
        name: "history_values",
        sqlite: include_str!("../migrations/sqlite/0023_history_values.sql"),
        postgres: include_str!("../migrations/postgres/0023_history_values.sql"),
    },
    Migration {
        version: 24,
        name: "subscription_terms",
        sqlite: include_str!("../migrations/sqlite/0024_subscription_terms.sql"),
        postgres: include_str!("../migrations/postgres/0024_subscription_terms.sql"),
    },
    Migration {
        version: 25,
        name: "entities_by_stream",
        sqlite: include_str!("../migrations/sqlite/0025_entities_by_stream.sql"),
        postgres: include_str!("../migrations/postgres/0025_entities_by_stream.sql"),
    },
    Migration {
        version: 26,
        name: "notification_leases",
        sqlite: include_str!("../migrations/sqlite/0026_notification_leases.sql"),
        postgres: include_str!("../migrations/postgres/0026_notification_leases.sql"),
    },
    Migration {
        version: 27,
        name: "governance_revision",
        sqlite: include_str!("../migrations/sqlite/0027_governance_revision.sql"),
        postgres: include_str!("../migrations/postgres/0027_governance_revision.sql"),
    },
];

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    // Several nodes may start at once: one migrates, the others wait for it.
    // The advisory lock belongs to a database session, so lock and unlock on
    // one dedicated connection (a pooled query could unlock on another one and
    // leave the lock held for ever).
    let mut lock = match backend {
        Backend::Postgres => {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock(727274) AS locked")
                .fetch_one(&mut *conn)
                .await?;
            Some(conn)
        }
        Backend::Sqlite => None,
    };
    let result = async {
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS citytrust_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL)")
            .execute(pool)
            .await?;
        apply_pending(pool, backend).await?;
        check_governed(pool, backend).await
    }
    .await;
    if let Some(conn) = lock.as_mut() {
        sqlx::query("SELECT pg_advisory_unlock(727274) AS unlocked")
            .fetch_one(&mut **conn)
            .await?;
    }
    result
}

async fn apply_pending(pool: &AnyPool, backend: Backend) -> Result<()> {
    let applied: Vec<i64> = sqlx::query("SELECT version FROM citytrust_migrations")
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| r.try_get("version"))
        .collect::<Result<_, _>>()?;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration {
                version: m.version,
                source,
            })?;
        sqlx::query("INSERT INTO citytrust_migrations (version, name) VALUES ($1, $2)")
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

/// Every table either moves the governance revision on each change (the
/// triggers of migration 27) or is one of [`crate::UNGOVERNED_TABLES`]: a
/// table added without either would let a decision kept across the
/// revision outlive a change to it, so the store does not open.
async fn check_governed(pool: &AnyPool, backend: Backend) -> Result<()> {
    let (tables, moving) = match backend {
        Backend::Sqlite => (
            "SELECT name FROM sqlite_master WHERE type = 'table'",
            // A trigger for each of insert, update and delete.
            "SELECT tbl_name AS name FROM sqlite_master WHERE type = 'trigger' \
             AND sql LIKE '%UPDATE counters SET value = value + 1 WHERE name = ''governance_revision''%' \
             GROUP BY tbl_name HAVING SUM(sql LIKE '%AFTER INSERT ON%') >= 1 \
             AND SUM(sql LIKE '%AFTER UPDATE ON%') >= 1 AND SUM(sql LIKE '%AFTER DELETE ON%') >= 1",
        ),
        Backend::Postgres => (
            "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = current_schema()",
            // On insert, delete and update (`tgtype` bits 2, 3 and 4).
            "SELECT c.relname::text AS name FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_proc p ON p.oid = t.tgfoid \
             WHERE n.nspname = current_schema() AND t.tgenabled <> 'D' \
             AND p.proname = 'citytrust_governance_moved' AND (t.tgtype & 28) = 28",
        ),
    };
    let names = |rows: Vec<sqlx::any::AnyRow>| -> Result<std::collections::BTreeSet<String>> {
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("name")?))
            .collect()
    };
    let tables = names(sqlx::query(tables).fetch_all(pool).await?)?;
    let moving = names(sqlx::query(moving).fetch_all(pool).await?)?;
    let missing: Vec<&String> = tables
        .iter()
        .filter(|t| !moving.contains(*t) && !crate::UNGOVERNED_TABLES.contains(&t.as_str()))
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "tables that neither move the governance revision nor are listed as ungoverned: {}",
            missing
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}
