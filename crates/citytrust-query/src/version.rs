//! Which version of a dataset a read names — the latest, a number, or the
//! one in force at a time — parsed in one place for every way a reader can
//! name it: a download's `version`/`as_of` parameters, a table, statistic or
//! look-up's `version`/`as_of` fields, and a query's `"table@…"` suffix.
//! Every malformed or contradictory choice is the one problem
//! `invalid_version`, naming the field.

use crate::{ProblemCode, QueryError};

/// A version as a read names it. Resolved to a stored version by the
/// service (`VersionChoice::AsOf`: the latest published at or before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionChoice {
    /// The newest version.
    #[default]
    Latest,
    /// Version N (numbered from 1).
    Number(i64),
    /// The version in force at this instant (seconds since the epoch, UTC).
    AsOf(i64),
}

/// Why a version choice is not one: the field it came from and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidVersion {
    pub field: &'static str,
    pub message: String,
}

impl InvalidVersion {
    /// The same, as the query engine refuses it.
    pub fn into_query_error(self) -> QueryError {
        QueryError::refused(
            ProblemCode::InvalidVersion,
            format!("{}: {}", self.field, self.message),
        )
    }
}

impl VersionChoice {
    /// From a read's two optional parameters (at most one may be given).
    pub fn from_parts(
        version: Option<i64>,
        as_of: Option<&str>,
    ) -> Result<VersionChoice, InvalidVersion> {
        match (version, as_of) {
            (Some(_), Some(_)) => Err(InvalidVersion {
                field: "as_of",
                message: "name the version by number or by time (as_of), not both".into(),
            }),
            (Some(n), None) => Self::number(n, "version"),
            (None, Some(text)) => Self::time(text, "as_of"),
            (None, None) => Ok(VersionChoice::Latest),
        }
    }

    /// From the part of a query's table name after `@`: `2`, `2026-03-01` or
    /// `2026-03-01T12:00:00Z`.
    pub fn from_suffix(text: &str) -> Result<VersionChoice, InvalidVersion> {
        match text.parse::<i64>() {
            Ok(n) => Self::number(n, "table"),
            Err(_) => Self::time(text, "table").map_err(|_| InvalidVersion {
                field: "table",
                message: format!(
                    "the part after @ must be a version number (\"t@2\"), a date \
                     (\"t@2026-03-01\") or an RFC 3339 time (\"t@2026-03-01T12:00:00Z\"), \
                     not {text:?}"
                ),
            }),
        }
    }

    fn number(n: i64, field: &'static str) -> Result<VersionChoice, InvalidVersion> {
        if n < 1 {
            return Err(InvalidVersion {
                field,
                message: "versions are numbered from 1".into(),
            });
        }
        Ok(VersionChoice::Number(n))
    }

    fn time(text: &str, field: &'static str) -> Result<VersionChoice, InvalidVersion> {
        parse_as_of(text)
            .map(VersionChoice::AsOf)
            .ok_or_else(|| InvalidVersion {
                field,
                message: "a time is a date (2026-03-01, as that day ended, UTC) or an RFC 3339 \
                          time (2026-03-01T12:00:00Z)"
                    .into(),
            })
    }
}

/// An "as of" time: `2026-03-01` (the end of that day, UTC) or an RFC 3339
/// instant; seconds since the epoch.
fn parse_as_of(text: &str) -> Option<i64> {
    if text.len() > 64 {
        return None;
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return day.and_hms_opt(23, 59, 59).map(|t| t.and_utc().timestamp());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_to_name_a_version() {
        assert_eq!(
            VersionChoice::from_parts(None, None),
            Ok(VersionChoice::Latest)
        );
        assert_eq!(
            VersionChoice::from_parts(Some(2), None),
            Ok(VersionChoice::Number(2))
        );
        assert_eq!(
            VersionChoice::from_parts(None, Some("2026-03-01")),
            Ok(VersionChoice::AsOf(1_772_409_599))
        );
        assert_eq!(
            VersionChoice::from_parts(None, Some("2026-03-01T12:00:00+01:00")),
            Ok(VersionChoice::AsOf(1_772_362_800))
        );
        assert_eq!(
            VersionChoice::from_suffix("3"),
            Ok(VersionChoice::Number(3))
        );
        assert_eq!(
            VersionChoice::from_suffix("2026-03-01"),
            VersionChoice::from_parts(None, Some("2026-03-01"))
        );
    }

    #[test]
    fn every_bad_choice_names_its_field() {
        for (choice, field) in [
            (VersionChoice::from_parts(Some(0), None), "version"),
            (VersionChoice::from_parts(Some(-1), None), "version"),
            (VersionChoice::from_parts(None, Some("yesterday")), "as_of"),
            (VersionChoice::from_parts(None, Some("2026-13-01")), "as_of"),
            (
                VersionChoice::from_parts(Some(1), Some("2026-03-01")),
                "as_of",
            ),
            (VersionChoice::from_suffix("0"), "table"),
            (VersionChoice::from_suffix("x"), "table"),
            (VersionChoice::from_suffix(""), "table"),
        ] {
            assert_eq!(choice.map_err(|e| e.field), Err(field));
        }
    }
}
