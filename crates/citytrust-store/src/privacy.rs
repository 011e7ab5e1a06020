//! Privacy budgets (R-PRV-5): spent in the same transaction as the log
//! entry that records the release, so a release is charged exactly once and
//! two concurrent releases cannot both pass the total.

use sqlx::Row;

use crate::{NewLogEntry, Result, Store, append_entry};

/// A data user's budget under one account (an agreement, or a dataset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// In billionths of epsilon.
    pub total_nano: i64,
    pub spent_nano: i64,
    pub releases: i64,
}

/// The outcome of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Charged; the release's log entry is `log_index`.
    Spent { budget: Budget, log_index: i64 },
    /// It would pass the total: nothing was charged or logged.
    Refused { budget: Budget },
}

impl Store {
    /// The budget of `username` under `account`, if anything was spent yet.
    pub async fn privacy_budget(&self, username: &str, account: &str) -> Result<Option<Budget>> {
        let row = sqlx::query(
            "SELECT total_nano, spent_nano, releases FROM privacy_budgets \
             WHERE username = $1 AND account = $2",
        )
        .bind(username)
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Budget {
                total_nano: r.try_get("total_nano")?,
                spent_nano: r.try_get("spent_nano")?,
                releases: r.try_get("releases")?,
            })
        })
        .transpose()
    }

    /// Spend `cost_nano` of the budget (opened at `total_nano` on first use)
    /// and append `entry`, or refuse when the total would be passed.
    pub async fn charge_privacy_budget(
        &self,
        username: &str,
        account: &str,
        total_nano: i64,
        cost_nano: i64,
        entry: &NewLogEntry<'_>,
    ) -> Result<Charge> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO privacy_budgets (username, account, total_nano, spent_nano, releases, updated_at) \
             VALUES ($1, $2, $3, 0, 0, $4) ON CONFLICT (username, account) DO NOTHING",
        )
        .bind(username)
        .bind(account)
        .bind(total_nano)
        .bind(entry.at)
        .execute(&mut *tx)
        .await?;
        let charged = sqlx::query(
            "UPDATE privacy_budgets SET spent_nano = spent_nano + $1, releases = releases + 1, \
             updated_at = $2 WHERE username = $3 AND account = $4 AND spent_nano + $1 <= total_nano \
             RETURNING total_nano, spent_nano, releases",
        )
        .bind(cost_nano)
        .bind(entry.at)
        .bind(username)
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        let read = |r: &sqlx::any::AnyRow| -> Result<Budget> {
            Ok(Budget {
                total_nano: r.try_get("total_nano")?,
                spent_nano: r.try_get("spent_nano")?,
                releases: r.try_get("releases")?,
            })
        };
        match charged {
            Some(row) => {
                let budget = read(&row)?;
                let log_index = append_entry(&mut tx, entry).await?;
                tx.commit().await?;
                Ok(Charge::Spent { budget, log_index })
            }
            None => {
                let row = sqlx::query(
                    "SELECT total_nano, spent_nano, releases FROM privacy_budgets \
                     WHERE username = $1 AND account = $2",
                )
                .bind(username)
                .bind(account)
                .fetch_one(&mut *tx)
                .await?;
                let budget = read(&row)?;
                tx.rollback().await?;
                Ok(Charge::Refused { budget })
            }
        }
    }
}
