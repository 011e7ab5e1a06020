//! Property test: no answer, error or refusal of a reader's SQL depends on a
//! row (or a column) the reader may not see.
//!
//! A personal table holds rows of admitted households and of hidden ones,
//! and a column the reader's agreement leaves out. Every hidden row is built
//! to make the query's functions fail (text where a number is cast, a zero
//! divisor) where no admitted row does. Queries are generated from a small
//! grammar — failing expressions in every position: selected, filtered,
//! grouped, ordered, joined, in subqueries, windows and CTEs — and each is
//! run twice through the same governed scan: over the whole file, and over a
//! file holding the admitted rows alone (without the hidden column). The two
//! outcomes must be the same: the same rows, or the same refusal code.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::ArrowWriter;
use futures::StreamExt;

use super::{TableSource, check, start};
use crate::subjects::SubjectFilter;
use crate::{QueryError, VersionStore};

/// A tiny deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.below(options.len() as u64) as usize]
    }
}

const ADMITTED: [&str; 2] = ["H-2", "H-4"];

/// (household, meter, kwh, note, n, secret) — admitted rows never fail,
/// hidden rows always do.
fn rows(
    with_hidden: bool,
) -> Vec<(
    &'static str,
    &'static str,
    f64,
    &'static str,
    i64,
    &'static str,
)> {
    let mut rows = vec![
        ("H-2", "M-2", 0.4, "42", 3, "s2"),
        ("H-2", "M-2", 0.6, "7", 5, "s2"),
        ("H-4", "M-4", 1.25, "13", 2, "s4"),
        ("H-4", "M-4", 2.5, "8", 1, "s4"),
        ("H-4", "M-5", 0.75, "21", 4, "s4"),
    ];
    if with_hidden {
        rows.extend([
            ("H-1", "M-1", 9.5, "abc", 0, "secret-1"),
            ("H-1", "M-2", 7.25, "x9", 0, "secret-1"),
            ("H-3", "M-3", 0.0, "", 0, "secret-3"),
            ("H-5", "M-4", -4.0, "1.5e", 0, "secret-5"),
        ]);
    }
    rows
}

fn write(path: &std::path::Path, with_hidden: bool) {
    let rows = rows(with_hidden);
    let mut fields = vec![
        Field::new("household", DataType::Utf8, true),
        Field::new("meter", DataType::Utf8, true),
        Field::new("kwh", DataType::Float64, true),
        Field::new("note", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        )),
    ];
    if with_hidden {
        fields.push(Field::new("secret", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(
            rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        )));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A number-valued expression; `fail` allows the ones that fail on hidden rows.
fn num(r: &mut Rng, depth: u32) -> String {
    if depth == 0 {
        return r
            .pick(&["kwh", "n", "1", "2.5", "CAST(note AS INT)", "100 / n"])
            .to_string();
    }
    match r.below(9) {
        0 => "CAST(note AS INT)".into(),
        1 => "(100 / n)".into(),
        2 => format!("({} + {})", num(r, depth - 1), num(r, depth - 1)),
        3 => format!("({} * {})", num(r, depth - 1), num(r, depth - 1)),
        4 => format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            pred(r, depth - 1),
            num(r, depth - 1),
            num(r, depth - 1)
        ),
        5 => format!("length({})", text(r, depth - 1)),
        6 => format!("COALESCE({}, {})", num(r, depth - 1), num(r, depth - 1)),
        7 => format!("abs({})", num(r, depth - 1)),
        _ => num(r, 0),
    }
}

fn text(r: &mut Rng, depth: u32) -> String {
    if depth == 0 {
        return r.pick(&["household", "meter", "note", "'lit'"]).to_string();
    }
    match r.below(6) {
        0 => format!("upper({})", text(r, depth - 1)),
        1 => format!("({} || {})", text(r, depth - 1), text(r, depth - 1)),
        2 => format!("CAST({} AS VARCHAR)", num(r, depth - 1)),
        3 => format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            pred(r, depth - 1),
            text(r, depth - 1),
            text(r, depth - 1)
        ),
        _ => text(r, 0),
    }
}

fn pred(r: &mut Rng, depth: u32) -> String {
    if depth == 0 {
        return r
            .pick(&[
                "household <> 'H-2'",
                "household IN ('H-1', 'H-2')",
                "kwh > 1",
                "n = 0",
                "note = '42'",
            ])
            .to_string();
    }
    match r.below(7) {
        0 => format!("{} > {}", num(r, depth - 1), num(r, depth - 1)),
        1 => format!("{} = {}", num(r, depth - 1), num(r, depth - 1)),
        2 => format!("{} = {}", text(r, depth - 1), text(r, depth - 1)),
        3 => format!("({} AND {})", pred(r, depth - 1), pred(r, depth - 1)),
        4 => format!("({} OR {})", pred(r, depth - 1), pred(r, depth - 1)),
        5 => format!("NOT ({})", pred(r, depth - 1)),
        _ => pred(r, 0),
    }
}

fn query(r: &mut Rng) -> String {
    let d = 1 + r.below(3) as u32;
    let filter = |r: &mut Rng| {
        if r.below(2) == 0 {
            format!(" WHERE {}", pred(r, d))
        } else {
            String::new()
        }
    };
    match r.below(12) {
        0 => format!(
            "SELECT {} AS a, {} AS b FROM t{}",
            num(r, d),
            text(r, d),
            filter(r)
        ),
        1 => format!(
            "SELECT {} AS g, COUNT(*) AS c, SUM({}) AS s FROM t{} GROUP BY 1 HAVING COUNT(*) > {}",
            text(r, d),
            num(r, d),
            filter(r),
            r.below(2)
        ),
        2 => format!(
            "SELECT COUNT(*) AS c, MIN({}) AS lo, MAX({}) AS hi FROM t{}",
            num(r, d),
            num(r, d),
            filter(r)
        ),
        3 => format!(
            "SELECT x.c FROM (SELECT {} AS c, household AS h FROM t{}) x JOIN (SELECT household AS h FROM t) y ON x.h = y.h",
            num(r, d),
            filter(r)
        ),
        4 => format!(
            "SELECT {} AS a FROM t WHERE household IN (SELECT household FROM t WHERE {})",
            num(r, d),
            pred(r, d)
        ),
        5 => format!(
            "SELECT household, {} AS a FROM t ORDER BY {}",
            num(r, d),
            num(r, d)
        ),
        6 => format!(
            "SELECT SUM({}) OVER (PARTITION BY meter) AS w FROM t{}",
            num(r, d),
            filter(r)
        ),
        7 => format!(
            "WITH c AS (SELECT {} AS v FROM t WHERE {}) SELECT COUNT(*) AS k, SUM(v) AS s FROM c",
            num(r, d),
            pred(r, d)
        ),
        8 => format!("SELECT DISTINCT {} AS s FROM t{}", text(r, d), filter(r)),
        9 => "SELECT * FROM t".to_string(),
        10 => format!("SELECT secret FROM t{}", filter(r)),
        _ => format!(
            "SELECT household FROM t WHERE {} ORDER BY household LIMIT {}",
            pred(r, d),
            1 + r.below(3)
        ),
    }
}

/// The outcome of a query: its rows as sorted text, or its refusal code.
async fn outcome(
    sql: &str,
    versions: &VersionStore,
    source: TableSource,
) -> Result<Vec<String>, String> {
    let code = |e: QueryError| match e {
        QueryError::Failed(f) => {
            if std::env::var("HIDDEN_ROWS_DETAIL").is_ok() {
                eprintln!("{sql}: {}", f.detail);
            }
            f.code.to_string()
        }
        QueryError::Refused { code, .. } => code.to_string(),
        other => format!("other: {other}"),
    };
    let checked = check(sql).map_err(code)?;
    let mut stream = start(checked, versions, &[source], super::Limits::default())
        .await
        .map_err(code)?;
    let mut rows = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| code(e.into()))?;
        for i in 0..batch.num_rows() {
            let row: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| {
                    let v = array_value_to_string(c, i).unwrap_or_default();
                    // Sums may add in another order: compare to 6 decimals.
                    match v.parse::<f64>() {
                        Ok(x) if v.contains('.') => format!("{x:.6}"),
                        _ => v,
                    }
                })
                .collect();
            rows.push(row.join("|"));
        }
    }
    rows.sort();
    Ok(rows)
}

#[tokio::test]
async fn no_outcome_depends_on_a_hidden_row_or_column() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.parquet");
    let admitted = dir.path().join("admitted.parquet");
    write(&full, true);
    write(&admitted, false);
    let versions = VersionStore::local(dir.path());
    let visible: Vec<String> = ["household", "meter", "kwh", "note", "n"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let seed: u64 = std::env::var("HIDDEN_ROWS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_205);
    let cases: usize = std::env::var("HIDDEN_ROWS_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut r = Rng(seed | 1);
    let mut failures = Vec::new();
    let mut refusals = 0;
    for case in 0..cases {
        let sql = query(&mut r);
        let governed = outcome(
            &sql,
            &versions,
            TableSource {
                table: "t".into(),
                location: full.to_string_lossy().into_owned(),
                columns: Some(visible.clone()),
                subjects: Some(SubjectFilter::only(
                    "household",
                    ADMITTED.iter().map(|s| s.to_string()),
                )),
            },
        )
        .await;
        // The same path over a file without the hidden rows (and without
        // the hidden column): only what the hidden rows are may differ.
        let truth = outcome(
            &sql,
            &versions,
            TableSource {
                table: "t".into(),
                location: admitted.to_string_lossy().into_owned(),
                columns: Some(visible.clone()),
                subjects: Some(SubjectFilter::only(
                    "household",
                    ADMITTED.iter().map(|s| s.to_string()),
                )),
            },
        )
        .await;
        if governed.is_err() {
            refusals += 1;
        }
        if governed != truth {
            failures.push(format!(
                "case {case} (seed {seed}): {sql}\n  governed: {governed:?}\n  admitted rows alone: {truth:?}"
            ));
        }
        if let Ok(rows) = &governed {
            for hidden in ["H-1", "H-3", "H-5", "secret", "abc"] {
                assert!(
                    !rows.iter().any(|row| row.contains(hidden)),
                    "{sql} showed {hidden}: {rows:?}"
                );
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The grammar does reach failures (on admitted rows, or at planning).
    assert!(
        refusals > 0 && refusals < cases,
        "{refusals} of {cases} refused"
    );
}

/// Every function the engine offers a reader, scalar and aggregate, called
/// on columns whose hidden rows make it fail (or not), in a selected and in
/// a filtering position: the outcome is the one over the admitted rows alone.
#[tokio::test]
async fn every_function_answers_as_over_the_admitted_rows_alone() {
    use datafusion::logical_expr::Volatility;
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.parquet");
    let admitted = dir.path().join("admitted.parquet");
    write(&full, true);
    write(&admitted, false);
    let versions = VersionStore::local(dir.path());
    let visible: Vec<String> = ["household", "meter", "kwh", "note", "n"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let source = |location: &std::path::Path| TableSource {
        table: "t".into(),
        location: location.to_string_lossy().into_owned(),
        columns: Some(visible.clone()),
        subjects: Some(SubjectFilter::only(
            "household",
            ADMITTED.iter().map(|s| s.to_string()),
        )),
    };
    // The functions a reader's query can call: those of a query session.
    let mut ctx = versions.session();
    crate::limits::bound_functions(&mut ctx).unwrap();
    let state = ctx.state();
    let mut scalars: Vec<String> = state
        .scalar_functions()
        .iter()
        .filter(|(_, f)| f.signature().volatility == Volatility::Immutable)
        .map(|(name, _)| name.clone())
        .collect();
    scalars.sort();
    let mut aggregates: Vec<String> = state
        .aggregate_functions()
        .iter()
        .filter(|(_, f)| f.signature().volatility == Volatility::Immutable)
        .map(|(name, _)| name.clone())
        .collect();
    aggregates.sort();
    assert!(
        scalars.len() > 50 && aggregates.len() > 10,
        "{scalars:?} {aggregates:?}"
    );
    let args = [
        "note",
        "note, n",
        "note, n, note",
        "100 / n, note",
        "CAST(note AS INT)",
    ];
    let mut failures = Vec::new();
    let mut queries = Vec::new();
    for f in &scalars {
        let f = if f.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            f.clone()
        } else {
            format!("\"{f}\"")
        };
        for a in args {
            queries.push(format!("SELECT {f}({a}) AS x FROM t"));
            queries.push(format!(
                "SELECT household FROM t WHERE {f}({a}) IS NOT NULL"
            ));
        }
    }
    for f in &aggregates {
        for a in ["note", "CAST(note AS INT)", "100 / n", "note, n"] {
            queries.push(format!("SELECT {f}({a}) AS x FROM t"));
            queries.push(format!("SELECT meter, {f}({a}) AS x FROM t GROUP BY meter"));
        }
    }
    for sql in &queries {
        let governed = outcome(sql, &versions, source(&full)).await;
        let truth = outcome(sql, &versions, source(&admitted)).await;
        if governed != truth {
            failures.push(format!(
                "{sql}\n  governed: {governed:?}\n  admitted rows alone: {truth:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
}
