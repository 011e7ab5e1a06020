//! Analytics of access (R-AUD-3) and the register's links from an agreement
//! to its log entries (R-AUD-4), computed from the signed entries of the
//! public log alone (`ledger_index`), so anyone holding the log can
//! recompute every figure. Public: no figure names a person.

use std::collections::{BTreeMap, HashMap};

use citytrust_model::Spectrum;
use citytrust_store::LedgerFacet;
use serde::Serialize;
use time::{Date, Duration};

use crate::{Result, Service};

/// The entry types that use dataset content: downloads, queries and
/// derivations (the latter two count once for each input).
pub const READ_KINDS: [&str; 3] = ["content.read", "query.run", "dataset.derived"];
const REQUEST_KINDS: [&str; 1] = ["access.requested"];

/// One bar of a chart: the key as the log has it, a label for people, a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Count {
    pub key: String,
    pub label: String,
    pub count: i64,
}

/// A dataset asked for in more than one access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RepeatedRequest {
    pub dataset: String,
    pub title: String,
    /// Access requests that named it.
    pub requests: i64,
    /// Distinct parties (organisations, groups, individuals) that asked.
    pub parties: i64,
}

/// Who uses which data, for what, and how often — from the signed log.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AccessAnalytics {
    /// Entries covered (the size of the newest checkpoint).
    pub signed_entries: i64,
    /// Uses of content over time: per day over the last 60 days with any
    /// use (gaps filled with zero), or per month when the span is longer.
    pub reads_over_time: Vec<Count>,
    /// `day` or `month`.
    pub period: String,
    pub reads_by_dataset: Vec<Count>,
    pub reads_by_purpose: Vec<Count>,
    pub reads_by_party: Vec<Count>,
    /// Datasets that can be read (not closed), fewest uses first (zero included), at most 10.
    pub least_used: Vec<Count>,
    /// Access requests per month.
    pub requests_over_time: Vec<Count>,
    pub repeated_requests: Vec<RepeatedRequest>,
}

/// One signed entry in an agreement's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AgreementEntry {
    pub index: i64,
    #[serde(rename = "type")]
    pub kind: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
}

/// The signed log entries about one agreement: its request, votes, decision,
/// versions, and every read made under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AgreementEntries {
    pub agreement: String,
    pub total: i64,
    pub entries: Vec<AgreementEntry>,
    /// Index to ask from for the next page (`from`), if there are more.
    pub next: Option<i64>,
}

impl Service {
    /// Analytics of access over the signed log.
    pub async fn access_analytics(&self) -> Result<AccessAnalytics> {
        let signed_entries = self.latest_checkpoint().await?.map(|c| c.size).unwrap_or(0);
        let datasets = self.store.list_datasets().await?;
        let titles: HashMap<&str, &str> = datasets
            .iter()
            .map(|d| (d.id.as_str(), d.metadata.title.as_str()))
            .collect();
        let organizations: HashMap<String, String> = self
            .store
            .list_organizations()
            .await?
            .into_iter()
            .map(|o| (o.id, o.name))
            .collect();
        let groups: HashMap<String, String> = self
            .store
            .list_groups()
            .await?
            .into_iter()
            .map(|g| (g.id, g.name))
            .collect();
        let dataset_label = |k: &str| {
            titles
                .get(k)
                .map_or_else(|| k.to_string(), |t| t.to_string())
        };
        let party_label = |k: &str| match k.split_once(':') {
            Some(("organization", id)) => {
                organizations.get(id).cloned().unwrap_or_else(|| id.into())
            }
            Some(("group", id)) => groups
                .get(id)
                .map_or_else(|| format!("group {id}"), |n| format!("{n} (group)")),
            _ if k == "public" => "The public (open data)".into(),
            _ if k == "individual" => "Individuals".into(),
            _ => k.to_string(),
        };
        let counts = |rows: Vec<(String, i64)>, label: &dyn Fn(&str) -> String| -> Vec<Count> {
            rows.into_iter()
                .map(|(key, count)| Count {
                    label: label(&key),
                    key,
                    count,
                })
                .collect()
        };
        let by_dataset = self
            .store
            .ledger_counts(LedgerFacet::Dataset, &READ_KINDS)
            .await?;
        let used: HashMap<&str, i64> = by_dataset.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        let mut least_used: Vec<Count> = datasets
            .iter()
            .filter(|d| d.metadata.spectrum != Spectrum::Closed)
            .map(|d| Count {
                key: d.id.clone(),
                label: d.metadata.title.clone(),
                count: used.get(d.id.as_str()).copied().unwrap_or(0),
            })
            .collect();
        least_used.sort_by(|a, b| a.count.cmp(&b.count).then_with(|| a.key.cmp(&b.key)));
        least_used.truncate(10);
        let reads_by_dataset = counts(by_dataset.clone(), &dataset_label);

        let days = self
            .store
            .ledger_counts(LedgerFacet::Day, &READ_KINDS)
            .await?;
        let (period, reads_over_time) = over_time(days, self.now().date());
        let requests_over_time = {
            let mut months = self
                .store
                .ledger_counts(LedgerFacet::Month, &REQUEST_KINDS)
                .await?;
            months.sort();
            counts(months, &|k| k.to_string())
        };
        let repeated_requests = self
            .store
            .ledger_repeats(REQUEST_KINDS[0])
            .await?
            .into_iter()
            .map(|(dataset, requests, parties)| RepeatedRequest {
                title: dataset_label(&dataset),
                dataset,
                requests,
                parties,
            })
            .collect();
        Ok(AccessAnalytics {
            signed_entries,
            reads_over_time,
            period: period.into(),
            reads_by_dataset,
            reads_by_purpose: counts(
                self.store
                    .ledger_counts(LedgerFacet::Purpose, &READ_KINDS)
                    .await?,
                &|k| k.to_string(),
            ),
            reads_by_party: counts(
                self.store
                    .ledger_counts(LedgerFacet::Party, &READ_KINDS)
                    .await?,
                &party_label,
            ),
            least_used,
            requests_over_time,
            repeated_requests,
        })
    }

    /// The signed entries about agreement `id` (which must exist), oldest
    /// first, `limit` (≤ 500) from log index `from`.
    pub async fn agreement_entries(
        &self,
        id: &str,
        from: i64,
        limit: i64,
    ) -> Result<AgreementEntries> {
        let agreement = self.agreement(id).await?;
        let limit = limit.clamp(1, 500);
        let (rows, total) = self
            .store
            .ledger_entries_of_agreement(&agreement.id, from.max(0), limit + 1)
            .await?;
        let mut entries: Vec<AgreementEntry> = rows
            .into_iter()
            .map(|(index, kind, day)| AgreementEntry { index, kind, day })
            .collect();
        let next = if entries.len() as i64 > limit {
            entries.pop().map(|e| e.index)
        } else {
            None
        };
        Ok(AgreementEntries {
            agreement: agreement.id,
            total,
            entries,
            next,
        })
    }
}

/// Uses per day from the first day with any use to `today` (at most the last
/// 60 days, gaps as zero), or per month when the uses span more than that.
fn over_time(days: Vec<(String, i64)>, today: Date) -> (&'static str, Vec<Count>) {
    let parsed: BTreeMap<Date, i64> = days
        .iter()
        .filter_map(|(d, n)| {
            Date::parse(d, time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
                .map(|d| (d, *n))
        })
        .collect();
    let Some((&first, _)) = parsed.first_key_value() else {
        return ("day", Vec::new());
    };
    let last = parsed
        .last_key_value()
        .map_or(today, |(d, _)| (*d).max(today));
    if last - first <= Duration::days(59) {
        let mut out = Vec::new();
        let mut d = first;
        loop {
            out.push(Count {
                key: d.to_string(),
                label: d.to_string(),
                count: parsed.get(&d).copied().unwrap_or(0),
            });
            match d.next_day() {
                Some(next) if next <= last => d = next,
                _ => break,
            }
        }
        return ("day", out);
    }
    let mut months: BTreeMap<String, i64> = BTreeMap::new();
    for (d, n) in parsed {
        *months
            .entry(format!("{:04}-{:02}", d.year(), u8::from(d.month())))
            .or_default() += n;
    }
    (
        "month",
        months
            .into_iter()
            .map(|(key, count)| Count {
                label: key.clone(),
                key,
                count,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn days_without_use_are_zero_and_long_spans_become_months() {
        let (period, days) = over_time(
            vec![("2026-11-20".into(), 3), ("2026-11-22".into(), 1)],
            date!(2026 - 11 - 23),
        );
        assert_eq!(period, "day");
        let got: Vec<(&str, i64)> = days.iter().map(|c| (c.key.as_str(), c.count)).collect();
        assert_eq!(
            got,
            [
                ("2026-11-20", 3),
                ("2026-11-21", 0),
                ("2026-11-22", 1),
                ("2026-11-23", 0)
            ]
        );
        let (period, months) = over_time(
            vec![
                ("2026-01-05".into(), 2),
                ("2026-01-09".into(), 1),
                ("2026-11-22".into(), 4),
            ],
            date!(2026 - 11 - 23),
        );
        assert_eq!(period, "month");
        let got: Vec<(&str, i64)> = months.iter().map(|c| (c.key.as_str(), c.count)).collect();
        assert_eq!(got, [("2026-01", 3), ("2026-11", 4)]);
        assert_eq!(over_time(vec![], date!(2026 - 11 - 23)).1, vec![]);
    }
}
