//! `citytrust anonymise`, `citytrust risk` and `citytrust tabulate`: the
//! release tools an owner runs on a CSV file before an anonymised extract or a
//! table leaves the building. Outputs are written beside the target and
//! renamed into place only on success.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use citytrust_privacy::kanon::{Criteria, LDiversity, QuasiIdentifier, Sensitive};
use citytrust_privacy::{Hierarchy, HierarchyKind, risk};
use clap::Args;
use serde::Serialize;

#[derive(Args)]
pub struct AnonymiseArgs {
    /// The table to anonymise (CSV with a header row).
    input: PathBuf,
    /// The quasi-identifiers: the columns an attacker could know from elsewhere.
    #[arg(long, value_delimiter = ',', required = true)]
    quasi: Vec<String>,
    /// A generalisation hierarchy for a column, in ARX's CSV format: `COL=FILE.csv` (repeatable).
    #[arg(long = "hierarchy", value_name = "COL=FILE")]
    hierarchies: Vec<String>,
    /// Build a column's hierarchy from its values: `COL` (kind inferred) or
    /// `COL:KIND`, KIND one of intervals, dates, redaction, grid (repeatable).
    #[arg(long = "auto-hierarchy", value_name = "COL[:KIND]")]
    auto_hierarchies: Vec<String>,
    /// Every released record must share its quasi-identifiers with at least k−1 others.
    #[arg(long)]
    k: usize,
    /// The most records that may be left out, as a percentage.
    #[arg(long, default_value_t = 0.0)]
    suppression: f64,
    /// `COL:L` (L distinct values of COL in every class) or `COL:L:entropy` (entropy l-diversity).
    #[arg(long = "l-diversity", value_name = "COL:L")]
    l_diversity: Option<String>,
    /// `COL:T`: every class's distribution of COL within distance T of the table's.
    #[arg(long = "t-closeness", value_name = "COL:T")]
    t_closeness: Option<String>,
    /// The field delimiter of the input, the output and the hierarchy files.
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// Where to write the anonymised table.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
pub struct RiskArgs {
    /// The table (CSV with a header row).
    input: PathBuf,
    /// The quasi-identifiers.
    #[arg(long, value_delimiter = ',', required = true)]
    quasi: Vec<String>,
    #[arg(long, default_value = ",")]
    delimiter: String,
    /// The share of the population the table holds (1 = all of it), for the journalist's risk.
    #[arg(long, default_value_t = 1.0)]
    sampling_fraction: f64,
    /// A record is at risk when its re-identification risk exceeds this.
    #[arg(long, default_value_t = risk::DEFAULT_THRESHOLD)]
    threshold: f64,
}

/// A CSV table in memory, with the line each record starts on.
struct Table {
    header: Vec<String>,
    records: Vec<csv::StringRecord>,
    lines: Vec<u64>,
}

impl Table {
    fn read(path: &Path, delimiter: u8) -> anyhow::Result<Table> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(false)
            .from_reader(std::io::BufReader::new(file));
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("{}: cannot read the header row", path.display()))?
            .iter()
            .map(str::to_owned)
            .collect();
        if header.is_empty() {
            bail!("{}: the file is empty", path.display());
        }
        let mut records = Vec::new();
        let mut lines = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| match e.kind() {
                csv::ErrorKind::UnequalLengths {
                    pos,
                    expected_len,
                    len,
                } => anyhow!(
                    "{}, line {}: {len} fields where the header has {expected_len}",
                    path.display(),
                    pos.as_ref().map_or(0, csv::Position::line)
                ),
                csv::ErrorKind::Utf8 { pos, .. } => anyhow!(
                    "{}, line {}: not valid UTF-8",
                    path.display(),
                    pos.as_ref().map_or(0, csv::Position::line)
                ),
                _ => anyhow!("{}: {e}", path.display()),
            })?;
            lines.push(record.position().map_or(0, csv::Position::line));
            records.push(record);
        }
        Ok(Table {
            header,
            records,
            lines,
        })
    }

    fn column(&self, name: &str) -> anyhow::Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            anyhow!(
                "column {name:?} is not in the header (the columns are: {})",
                self.header.join(", ")
            )
        })
    }

    fn values(&self, column: usize) -> Vec<&str> {
        self.records
            .iter()
            .map(|r| r.get(column).unwrap_or(""))
            .collect()
    }
}

fn delimiter_byte(delimiter: &str) -> anyhow::Result<u8> {
    match delimiter.as_bytes() {
        [b] => Ok(*b),
        _ if delimiter == "\\t" => Ok(b'\t'),
        _ => bail!("--delimiter must be one character, not {delimiter:?}"),
    }
}

fn split_spec<'a>(flag: &str, spec: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    spec.split_once(':')
        .filter(|(c, v)| !c.is_empty() && !v.is_empty())
        .ok_or_else(|| anyhow!("{flag} takes COL:VALUE, not {spec:?}"))
}

#[derive(Serialize)]
struct HierarchyUsed {
    column: String,
    kind: HierarchyKind,
    levels: usize,
    file: Option<String>,
}

#[derive(Serialize)]
struct Timing {
    read_ms: f64,
    anonymise_ms: f64,
    write_ms: f64,
}

#[derive(Serialize)]
struct AnonymiseOutput<'a> {
    input: String,
    output: String,
    quasi_identifiers: &'a [String],
    sensitive: Option<&'a str>,
    hierarchies: Vec<HierarchyUsed>,
    #[serde(flatten)]
    report: &'a citytrust_privacy::Report,
    timing: Timing,
}

pub fn anonymise(args: AnonymiseArgs) -> anyhow::Result<()> {
    let delimiter = delimiter_byte(&args.delimiter)?;
    if args.output == args.input {
        bail!("--output must not be the input file");
    }
    let started = Instant::now();
    let table = Table::read(&args.input, delimiter)?;

    // Hierarchies: from files, or built from the values.
    let mut files: BTreeMap<&str, &str> = BTreeMap::new();
    for spec in &args.hierarchies {
        let (column, file) = spec
            .split_once('=')
            .filter(|(c, f)| !c.is_empty() && !f.is_empty())
            .ok_or_else(|| anyhow!("--hierarchy takes COL=FILE, not {spec:?}"))?;
        files.insert(column, file);
    }
    let mut autos: BTreeMap<&str, Option<HierarchyKind>> = BTreeMap::new();
    for spec in &args.auto_hierarchies {
        let (column, kind) = match spec.split_once(':') {
            Some((column, kind)) => {
                let kind = HierarchyKind::parse(kind).ok_or_else(|| {
                    anyhow!("--auto-hierarchy {spec}: the kind must be intervals, dates, redaction or grid")
                })?;
                (column, Some(kind))
            }
            None => (spec.as_str(), None),
        };
        autos.insert(column, kind);
    }
    for column in files.keys().chain(autos.keys()) {
        if !args.quasi.iter().any(|q| q == column) {
            bail!("a hierarchy is given for {column:?}, which is not one of the --quasi columns");
        }
    }
    let mut columns = Vec::with_capacity(args.quasi.len());
    let mut hierarchies = Vec::with_capacity(args.quasi.len());
    let mut used = Vec::with_capacity(args.quasi.len());
    for name in &args.quasi {
        let column = table.column(name)?;
        columns.push(column);
        let (hierarchy, file) = match (files.get(name.as_str()), autos.get(name.as_str())) {
            (Some(_), Some(_)) => bail!("{name:?} has both --hierarchy and --auto-hierarchy"),
            (Some(file), None) => {
                let bytes =
                    std::fs::read(file).with_context(|| format!("cannot read hierarchy {file}"))?;
                let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
                let delimiter = if !first.contains(&delimiter) && first.contains(&b';') {
                    b';'
                } else {
                    delimiter
                };
                let hierarchy = Hierarchy::from_csv(&bytes, delimiter)
                    .map_err(|e| anyhow!("hierarchy {file} (for {name:?}): {e}"))?;
                (hierarchy, Some((*file).to_owned()))
            }
            (None, Some(kind)) => {
                let hierarchy = Hierarchy::automatic(table.values(column), name, *kind)
                    .map_err(|e| anyhow!("--auto-hierarchy {name}: {e}"))?;
                (hierarchy, None)
            }
            (None, None) => bail!(
                "{name:?} needs a hierarchy: --hierarchy {name}=FILE.csv or --auto-hierarchy {name}"
            ),
        };
        used.push(HierarchyUsed {
            column: name.clone(),
            kind: hierarchy.kind(),
            levels: hierarchy.levels(),
            file,
        });
        hierarchies.push(hierarchy);
    }

    // The sensitive column and its criteria.
    let mut sensitive_name: Option<&str> = None;
    let mut l_diversity = None;
    if let Some(spec) = &args.l_diversity {
        let (column, rest) = split_spec("--l-diversity", spec)?;
        let (l, variant) = rest.split_once(':').unwrap_or((rest, "distinct"));
        l_diversity = Some(match variant {
            "distinct" => LDiversity::Distinct {
                l: l.parse()
                    .map_err(|_| anyhow!("--l-diversity {spec}: L must be a whole number"))?,
            },
            "entropy" => LDiversity::Entropy {
                l: l.parse()
                    .map_err(|_| anyhow!("--l-diversity {spec}: L must be a number"))?,
            },
            other => bail!(
                "--l-diversity {spec}: the variant must be distinct or entropy, not {other:?}"
            ),
        });
        sensitive_name = Some(column);
    }
    let mut t_closeness = None;
    if let Some(spec) = &args.t_closeness {
        let (column, t) = split_spec("--t-closeness", spec)?;
        if sensitive_name.is_some_and(|s| s != column) {
            bail!("--l-diversity and --t-closeness must name the same sensitive column");
        }
        t_closeness = Some(
            t.parse::<f64>()
                .map_err(|_| anyhow!("--t-closeness {spec}: T must be a number"))?,
        );
        sensitive_name = Some(column);
    }
    if let Some(name) = sensitive_name
        && args.quasi.iter().any(|q| q == name)
    {
        bail!("{name:?} cannot be both a quasi-identifier and the sensitive column");
    }
    let sensitive_column = sensitive_name.map(|n| table.column(n)).transpose()?;
    let read_ms = ms(started);

    let started = Instant::now();
    let quasi: Vec<QuasiIdentifier<'_>> = args
        .quasi
        .iter()
        .zip(&columns)
        .zip(&hierarchies)
        .map(|((name, column), hierarchy)| QuasiIdentifier {
            name,
            values: table.values(*column),
            hierarchy,
        })
        .collect();
    let sensitive = sensitive_column
        .zip(sensitive_name)
        .map(|(column, name)| Sensitive {
            name,
            values: table.values(column),
        });
    let criteria = Criteria {
        k: args.k,
        suppression_percent: args.suppression,
        l_diversity,
        t_closeness,
    };
    let result = citytrust_privacy::anonymise(&quasi, sensitive.as_ref(), criteria).map_err(
        |e| match e {
            citytrust_privacy::AnonymiseError::NotInHierarchy {
                record,
                column,
                value,
            } => anyhow!(
                "{}, line {}, column {column:?}: value {value:?} is not in the column's hierarchy",
                args.input.display(),
                table.lines.get(record - 1).copied().unwrap_or(0)
            ),
            other => anyhow!(other),
        },
    )?;
    let anonymise_ms = ms(started);

    // Write beside the output and rename, so a failure leaves no half file.
    let started = Instant::now();
    let parent = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temporary = tempfile_in(parent)?;
    {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(std::io::BufWriter::new(temporary.as_file()));
        writer.write_record(&table.header)?;
        let position: BTreeMap<usize, usize> =
            columns.iter().enumerate().map(|(q, c)| (*c, q)).collect();
        let mut row: Vec<&str> = Vec::with_capacity(table.header.len());
        for (index, record) in table.records.iter().enumerate() {
            if result.suppressed(index) {
                continue;
            }
            row.clear();
            for (c, value) in record.iter().enumerate() {
                row.push(match position.get(&c) {
                    Some(q) => result.label(index, *q).unwrap_or("*"),
                    None => value,
                });
            }
            writer.write_record(&row)?;
        }
        writer.flush()?;
    }
    temporary
        .persist(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let write_ms = ms(started);

    let output = AnonymiseOutput {
        input: args.input.display().to_string(),
        output: args.output.display().to_string(),
        quasi_identifiers: &args.quasi,
        sensitive: sensitive_name,
        hierarchies: used,
        report: &result.report,
        timing: Timing {
            read_ms,
            anonymise_ms,
            write_ms,
        },
    };
    print_json(&output)
}

fn tempfile_in(dir: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".citytrust-anonymise")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

#[derive(Serialize)]
struct RiskOutput<'a> {
    input: String,
    quasi_identifiers: &'a [String],
    #[serde(flatten)]
    risk: risk::RiskReport,
}

pub fn risk(args: RiskArgs) -> anyhow::Result<()> {
    let delimiter = delimiter_byte(&args.delimiter)?;
    if !(args.sampling_fraction > 0.0 && args.sampling_fraction <= 1.0) {
        bail!("--sampling-fraction must be more than 0 and at most 1");
    }
    let table = Table::read(&args.input, delimiter)?;
    let columns = args
        .quasi
        .iter()
        .map(|name| table.column(name).map(|c| table.values(c)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = risk::risk_of_columns(&columns, args.sampling_fraction, args.threshold);
    print_json(&RiskOutput {
        input: args.input.display().to_string(),
        quasi_identifiers: &args.quasi,
        risk: report,
    })
}

#[derive(Args)]
pub struct TabulateArgs {
    /// The table (CSV with a header row).
    input: PathBuf,
    /// The columns to group by (one to four).
    #[arg(long, value_delimiter = ',', required = true)]
    by: Vec<String>,
    /// Numeric columns to sum per cell (suppressed with the cell's count).
    #[arg(long, value_delimiter = ',')]
    sum: Vec<String>,
    /// Cells counting fewer records than this (and more than none) are suppressed.
    #[arg(long, default_value_t = 10)]
    threshold: u64,
    #[arg(long, default_value = ",")]
    delimiter: String,
}

#[derive(Serialize)]
struct TabulateOutput<'a> {
    input: String,
    dimensions: &'a [String],
    measures: &'a [String],
    records: usize,
    #[serde(flatten)]
    table: citytrust_privacy::cells::Protected,
}

/// `citytrust tabulate`: a GROUP BY count (and sums) with every margin, small
/// cells suppressed and secondary suppression applied, as JSON.
pub fn tabulate(args: TabulateArgs) -> anyhow::Result<()> {
    let delimiter = delimiter_byte(&args.delimiter)?;
    if args.by.len() > 4 {
        bail!("--by takes at most four columns, not {}", args.by.len());
    }
    if args.threshold == 0 {
        bail!("--threshold must be at least 1");
    }
    let table = Table::read(&args.input, delimiter)?;
    let by = args
        .by
        .iter()
        .map(|name| table.column(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sums = args
        .sum
        .iter()
        .map(|name| table.column(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut groups: BTreeMap<Vec<String>, (u64, Vec<f64>)> = BTreeMap::new();
    for (record, line) in table.records.iter().zip(&table.lines) {
        let key: Vec<String> = by
            .iter()
            .map(|c| record.get(*c).unwrap_or("").trim().to_owned())
            .collect();
        let mut values = Vec::with_capacity(sums.len());
        for (c, name) in sums.iter().zip(&args.sum) {
            let raw = record.get(*c).unwrap_or("").trim();
            let value: f64 = raw.parse().map_err(|_| {
                anyhow!(
                    "{}, line {line}, column {name:?}: {raw:?} is not a number",
                    args.input.display()
                )
            })?;
            values.push(value);
        }
        let entry = groups
            .entry(key)
            .or_insert_with(|| (0, vec![0.0; sums.len()]));
        entry.0 += 1;
        for (total, v) in entry.1.iter_mut().zip(values) {
            *total += v;
        }
    }
    let rows: Vec<(Vec<String>, u64, Vec<f64>)> = groups
        .into_iter()
        .map(|(key, (count, sums))| (key, count, sums))
        .collect();
    let protected = citytrust_privacy::cells::protect(by.len(), &rows, args.threshold)?;
    print_json(&TabulateOutput {
        input: args.input.display().to_string(),
        dimensions: &args.by,
        measures: &args.sum,
        records: table.records.len(),
        table: protected,
    })
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let mut out = serde_json::to_string_pretty(value)?;
    out.push('\n');
    match std::io::stdout().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
