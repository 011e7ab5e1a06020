//! Field-level validation: every error names the field it is about, as a
//! dotted path (`licence.url`, `keywords[3]`), so API clients and forms can
//! point at it.

use serde::Serialize;
use utoipa::ToSchema;

/// One thing wrong with one field of an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `title` or `roles[0].organization_id`.
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// All that is wrong with an input; never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {}", summary(.0))]
pub struct ValidationErrors(pub Vec<FieldError>);

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ValidationErrors {
    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationErrors(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// A string that must be present: not blank, at most `max` characters.
    pub fn required_text(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.push(field, "must not be empty");
        } else {
            self.max_len(field, value, max);
        }
    }
    pub fn max_len(&mut self, field: &str, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.push(field, format!("is {n} characters long; the limit is {max}"));
        }
        if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            self.push(field, "contains control characters");
        }
    }
    pub fn optional_text(&mut self, field: &str, value: &Option<String>, max: usize) {
        if let Some(v) = value {
            self.max_len(field, v, max);
        }
    }
    pub fn url(&mut self, field: &str, value: &Option<String>) {
        if let Some(v) = value {
            if !(v.starts_with("https://") || v.starts_with("http://")) || v.len() < 10 {
                self.push(field, "must be an absolute http(s) URL");
            } else if v.chars().any(char::is_whitespace) {
                self.push(field, "must not contain spaces");
            }
            self.max_len(field, v, 2000);
        }
    }
    pub fn email(&mut self, field: &str, value: &Option<String>) {
        if let Some(v) = value {
            let ok = v.len() <= 254
                && v.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                })
                && !v.chars().any(char::is_whitespace);
            if !ok {
                self.push(field, "must be an email address such as data@city.example");
            }
        }
    }
    pub fn slug(&mut self, field: &str, value: &str) {
        if !is_slug(value) {
            self.push(
                field,
                "must be 2 to 100 characters of lower-case letters, digits and single hyphens, starting and ending with a letter or digit",
            );
        }
    }
    pub fn list(&mut self, field: &str, values: &[String], max_items: usize, max_len: usize) {
        if values.len() > max_items {
            self.push(
                field,
                format!("has {} items; the limit is {max_items}", values.len()),
            );
        }
        for (i, v) in values.iter().enumerate() {
            self.required_text(&format!("{field}[{i}]"), v, max_len);
        }
    }
    /// An ISO 8601 calendar date, YYYY-MM-DD.
    pub fn date(&mut self, field: &str, value: &str) -> Option<time::Date> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        match time::Date::parse(value, &format) {
            Ok(d) => Some(d),
            Err(_) => {
                self.push(field, "must be a date written YYYY-MM-DD");
                None
            }
        }
    }
}

/// A URL-safe identifier: `barcelona-air-quality`.
pub fn is_slug(s: &str) -> bool {
    let len = s.len();
    (2..=100).contains(&len)
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Derive a slug from a title: lower case, ASCII letters and digits, hyphens
/// between words; accents folded for the common Latin letters.
pub fn slugify(title: &str) -> String {
    let mut out = String::new();
    let mut pending_hyphen = false;
    for c in title.chars() {
        let folded: &str = match c {
            'à' | 'á' | 'â' | 'ä' | 'ã' | 'å' | 'À' | 'Á' | 'Â' | 'Ä' | 'Ã' | 'Å' => {
                "a"
            }
            'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
            'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
            'ò' | 'ó' | 'ô' | 'ö' | 'õ' | 'Ò' | 'Ó' | 'Ô' | 'Ö' | 'Õ' => "o",
            'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => "u",
            'ç' | 'Ç' => "c",
            'ñ' | 'Ñ' => "n",
            'ß' => "ss",
            _ => "",
        };
        if !folded.is_empty() || c.is_ascii_alphanumeric() {
            if pending_hyphen && !out.is_empty() {
                out.push('-');
            }
            pending_hyphen = false;
            if folded.is_empty() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.push_str(folded);
            }
        } else {
            pending_hyphen = true;
        }
        if out.len() >= 80 {
            break;
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.len() < 2 {
        format!("dataset-{out}").trim_end_matches('-').to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_slugify(title: &str, expect: &str) {
        let got = slugify(title);
        assert_eq!(got, expect, "slugify({title:?})");
        assert!(is_slug(&got), "{got:?} is not a slug");
    }

    #[test]
    fn slugs_from_titles() {
        check_slugify("Barcelona air quality", "barcelona-air-quality");
        check_slugify(
            "  Qualitat de l'aire — Barcelona ",
            "qualitat-de-l-aire-barcelona",
        );
        check_slugify("Mortalitat per barris (2017)", "mortalitat-per-barris-2017");
        check_slugify("Montréal élection", "montreal-election");
        check_slugify("!", "dataset");
    }

    #[test]
    fn slug_rules() {
        for ok in ["ab", "barcelona-air-quality", "a1-b2"] {
            assert!(is_slug(ok), "{ok}");
        }
        for bad in [
            "a",
            "-ab",
            "ab-",
            "a--b",
            "Ab",
            "a b",
            "a_b",
            "é-b",
            &"x".repeat(101),
        ] {
            assert!(!is_slug(bad), "{bad}");
        }
    }

    #[test]
    fn text_limits_name_the_field() {
        let mut e = ValidationErrors::default();
        e.required_text("title", "", 10);
        e.required_text("description", &"x".repeat(11), 10);
        e.url("licence.url", &Some("ftp://x".into()));
        e.email("contact.email", &Some("nobody".into()));
        e.date("temporal_coverage.start", "2017-13-01");
        let fields: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "title",
                "description",
                "licence.url",
                "contact.email",
                "temporal_coverage.start"
            ]
        );
    }
}
