//! Tidy checks (as rust-analyzer keeps them): rules about the source tree
//! itself that review would otherwise have to remember. Every source file
//! opens with a `//!` header saying what it is for and is named in
//! ARCHITECTURE.md's code map, in its crate's row; roles are checked only in
//! `citytrust-model/src/authz.rs`; problem codes are named only in the
//! `ProblemCode` enum. Each check names the file and line that breaks it.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `crates/`, as a path relative to the workspace.
fn rust_files() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&p, root, out);
                }
            } else if name.ends_with(".rs") {
                out.push(
                    p.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let root = workspace().canonicalize().unwrap();
    let mut out = Vec::new();
    walk(&root.join("crates"), &root, &mut out);
    assert!(out.len() > 50, "found only {} source files", out.len());
    out
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap()
}

/// Product code only: the file up to its `#[cfg(test)]` module, and not the
/// tests, examples or benches directories.
fn product_code(rel: &str) -> Option<String> {
    let parts: Vec<&str> = rel.split('/').collect();
    if parts.get(2) != Some(&"src") {
        return None;
    }
    let text = read(rel);
    Some(match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    })
}

/// The product code's lines (not comments) that `bad` flags, as
/// `file:line: text`, in every file but those `skip` names.
fn offending_lines(skip: impl Fn(&str) -> bool, bad: impl Fn(&str) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    for rel in rust_files() {
        if skip(&rel) {
            continue;
        }
        let Some(code) = product_code(&rel) else {
            continue;
        };
        for (n, line) in code.lines().enumerate() {
            if !line.trim_start().starts_with("//") && bad(line) {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|rel| {
            let text = read(rel);
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` header saying what they are for:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_code_map_names_every_source_file() {
    let arch = read("ARCHITECTURE.md");
    let row = |krate: &str| -> String {
        let start = format!("| `crates/{krate}/` |");
        arch.lines()
            .find(|l| l.starts_with(&start))
            .unwrap_or_else(|| panic!("ARCHITECTURE.md's code map has no row for crates/{krate}/"))
            .to_string()
    };
    let mut missing = Vec::new();
    for rel in rust_files() {
        let parts: Vec<&str> = rel.split('/').collect();
        let krate = parts[1];
        // Named as from the crate's `src/`, or from the crate root otherwise.
        let name = if parts[2] == "src" {
            parts[3..].join("/")
        } else {
            parts[2..].join("/")
        };
        let row = row(krate);
        let named = row.match_indices(&name).any(|(at, _)| {
            let before = row[..at].chars().next_back();
            let after = row[at + name.len()..].chars().next();
            !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '/' || c == '.')
                && !matches!(after, Some(c) if c.is_alphanumeric() || c == '_')
        });
        if !named {
            missing.push(format!("{rel} (as `{name}` in the row of crates/{krate}/)"));
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name:\n  {}",
        missing.join("\n  ")
    );
}

/// Invariant: who may do what is decided in `citytrust-model::authz` alone,
/// so a rule cannot be re-derived (and drift) in a handler or a use case.
#[test]
fn roles_are_checked_only_in_authz() {
    const ALLOWED: [&str; 2] = [
        "crates/citytrust-model/src/authz.rs",
        // Where the questions themselves are defined.
        "crates/citytrust-model/src/account.rs",
    ];
    let asks = [".has_role(", ".is_admin()"];
    let found = offending_lines(
        |rel| ALLOWED.contains(&rel),
        |line| asks.iter().any(|a| line.contains(a)),
    );
    assert!(
        found.is_empty(),
        "roles checked outside citytrust-model/src/authz.rs (add a `may_…` rule there and call it):\n  {}",
        found.join("\n  ")
    );
}

/// Invariant: a problem code is spelled only in `ProblemCode`, so clients'
/// codes cannot drift apart (`too_many` in one place, `too_many_requests` in
/// another). Product code may not pass a string where a code goes, nor
/// spell a code of two or more words as a string anywhere.
#[test]
fn problem_codes_are_spelled_only_in_the_enum() {
    const ENUM: &str = "crates/citytrust-model/src/problem.rs";
    let codes: Vec<String> = read(ENUM)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (_, rest) = l.split_once(" = \"")?;
            Some(rest.trim_end_matches("\",").to_string())
        })
        .collect();
    assert!(
        codes.len() > 40,
        "read only {} codes from {ENUM}",
        codes.len()
    );
    // Where a code goes: `code: "…"`, `refused("…"`, `ApiError::new(status, "…"`.
    let positions = [
        "code: \"",
        "refused(\"",
        "ApiError::new(StatusCode::",
        "ApiError::field(StatusCode::",
    ];
    let literal_after = |line: &str, p: &str| {
        line.find(p).is_some_and(|at| {
            let rest = &line[at + p.len()..];
            p.ends_with('"')
                || rest
                    .split(',')
                    .nth(1)
                    .is_some_and(|a| a.trim_start().starts_with('"'))
        })
    };
    let found = offending_lines(
        // The charter's crate speaks Cedar: its strings are the schema's
        // attribute names (`agreement_in_force`), not problem codes.
        |rel| rel == ENUM || rel.starts_with("crates/citytrust-policy/"),
        |line| {
            let spelled = codes
                .iter()
                .filter(|c| c.contains('_'))
                .any(|c| line.contains(&format!("\"{c}\"")));
            spelled || positions.iter().any(|p| literal_after(line, p))
        },
    );
    assert!(
        found.is_empty(),
        "problem codes spelled outside {ENUM} (use `ProblemCode::…`):\n  {}",
        found.join("\n  ")
    );
}

/// Invariant: every state-changing portal form comes through `SignedForm`
/// (session + CSRF token checked as it is extracted). Only `web.rs` — where
/// the extractor, sign-in's double-submit check and sign-out live — parses
/// a form itself.
#[test]
fn portal_forms_are_checked_by_one_extractor() {
    const HOME: &str = "crates/citytrust-server/src/web.rs";
    let found = offending_lines(
        |rel| rel == HOME,
        |line| line.contains("Form::parse(") || line.contains(".check_form("),
    );
    assert!(
        found.is_empty(),
        "forms parsed outside the `SignedForm` extractor (take `signed: SignedForm`):\n  {}",
        found.join("\n  ")
    );
}

/// Every JSON operation documents the problems any operation may answer
/// (`CommonProblems`), so the OpenAPI description matches what is sent.
/// Exceptions answer something else than problem+json: health, the DCAT-AP
/// documents, CKAN's envelope.
#[test]
fn every_operation_documents_the_common_problems() {
    const NOT_JSON_PROBLEMS: [&str; 4] = ["healthz", "catalog_turtle", "catalog_jsonld", "action"];
    let mut missing = Vec::new();
    for rel in rust_files() {
        if !rel.starts_with("crates/citytrust-server/src/") {
            continue;
        }
        let text = read(&rel);
        for block in text.split("#[utoipa::path(").skip(1) {
            let Some(at) = block.find("async fn ") else {
                continue;
            };
            let name: String = block[at + 9..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !block[..at].contains("CommonProblems")
                && !NOT_JSON_PROBLEMS.contains(&name.as_str())
            {
                missing.push(format!("{rel}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "operations whose `responses(…)` do not start with `CommonProblems`:\n  {}",
        missing.join("\n  ")
    );
}
