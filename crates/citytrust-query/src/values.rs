//! Column types, how text becomes a typed value, and how a sample decides a
//! column's type.

use std::fmt;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

/// The types a stored column can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Boolean,
    Integer,
    Float,
    Date,
    Timestamp,
    Text,
}

impl ColumnType {
    pub fn parse(s: &str) -> Option<ColumnType> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "bool" | "boolean" => ColumnType::Boolean,
            "int" | "integer" | "int64" | "bigint" => ColumnType::Integer,
            "float" | "double" | "number" | "float64" | "real" => ColumnType::Float,
            "date" => ColumnType::Date,
            "timestamp" | "datetime" => ColumnType::Timestamp,
            "text" | "string" | "utf8" | "varchar" => ColumnType::Text,
            _ => return None,
        })
    }

    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Integer => DataType::Int64,
            ColumnType::Float => DataType::Float64,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::Text => DataType::Utf8,
        }
    }

    /// The CityTrust type of an Arrow type, if it is one CityTrust stores as is.
    pub fn of_arrow(data_type: &DataType) -> Option<ColumnType> {
        Some(match data_type {
            DataType::Boolean => ColumnType::Boolean,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => ColumnType::Integer,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => ColumnType::Float,
            DataType::Date32 | DataType::Date64 => ColumnType::Date,
            DataType::Timestamp(_, _) => ColumnType::Timestamp,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
            _ => return None,
        })
    }

    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Integer | ColumnType::Float)
    }

    pub fn is_temporal(self) -> bool {
        matches!(self, ColumnType::Date | ColumnType::Timestamp)
    }

    fn noun(self) -> &'static str {
        match self {
            ColumnType::Boolean => "a boolean (true/false)",
            ColumnType::Integer => "an integer",
            ColumnType::Float => "a number",
            ColumnType::Date => "a date (YYYY-MM-DD)",
            ColumnType::Timestamp => "a timestamp (YYYY-MM-DDTHH:MM:SS)",
            ColumnType::Text => "text",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Text => "text",
        })
    }
}

/// A type the owner declares for a column, with an optional `chrono` format
/// for dates and timestamps written other than ISO 8601 (`%m/%d/%y %H:%M`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub column_type: ColumnType,
    pub format: Option<String>,
}

impl Declared {
    /// `integer`, `date`, `timestamp:%m/%d/%Y %H:%M`, …
    pub fn parse(s: &str) -> Result<Declared, String> {
        let (ty, format) = match s.split_once(':') {
            Some((ty, format)) => (ty, Some(format.to_string())),
            None => (s, None),
        };
        let column_type = ColumnType::parse(ty).ok_or_else(|| {
            format!(
                "unknown column type '{ty}' (use boolean, integer, float, date, timestamp or text)"
            )
        })?;
        if format.is_some() && !column_type.is_temporal() {
            return Err(format!(
                "only date and timestamp columns take a format (got '{s}')"
            ));
        }
        Ok(Declared {
            column_type,
            format,
        })
    }
}

/// Text that stands for "no value" in the files cities publish.
pub fn is_null_token(s: &str) -> bool {
    matches!(
        s.trim(),
        "" | "NA" | "N/A" | "n/a" | "null" | "NULL" | "None"
    )
}

/// One cell as read from the input, before it takes its column's type.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Null,
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Float(f64),
}

/// A typed value ready to append.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Date(i32),
    Timestamp(i64),
    Text(&'a str),
}

fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    // "007" is a code, not the number 7: keep leading zeros by keeping it text.
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    let first = t.bytes().next()?;
    // Rust also accepts "inf" and "nan" as words; data files mean text by them.
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return None;
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t).as_bytes();
    // As for integers: "08001" is a code.
    if digits.len() > 1 && digits[0] == b'0' && digits[1].is_ascii_digit() {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    v.is_finite().then_some(v)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "true" | "TRUE" | "True" => Some(true),
        "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

const EPOCH: NaiveDate = match NaiveDate::from_ymd_opt(1970, 1, 1) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

fn parse_date(s: &str, format: Option<&str>) -> Option<i32> {
    let t = s.trim();
    let d = match format {
        Some(f) => NaiveDate::parse_from_str(t, f).ok()?,
        None => {
            if t.len() != 10 {
                return None;
            }
            NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()?
        }
    };
    i32::try_from(d.signed_duration_since(EPOCH).num_days()).ok()
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T`), the commonest form, without allocating.
fn plain_timestamp(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(n(0, 4)?).ok()?, n(5, 7)?, n(8, 10)?)?;
    date.and_hms_opt(n(11, 13)?, n(14, 16)?, n(17, 19)?)
}

fn parse_timestamp(s: &str, format: Option<&str>) -> Option<i64> {
    let t = s.trim();
    let dt = match format {
        Some(f) => NaiveDateTime::parse_from_str(t, f).ok()?,
        None => {
            if t.len() < 16 || t.as_bytes().get(4) != Some(&b'-') {
                return None;
            }
            if let Some(dt) = plain_timestamp(t.as_bytes()) {
                return Some(dt.and_utc().timestamp_micros());
            }
            if let Ok(with_zone) = chrono::DateTime::parse_from_rfc3339(t) {
                with_zone.naive_utc()
            } else {
                let t = t.replacen(' ', "T", 1);
                NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M"))
                    .ok()?
            }
        }
    };
    Some(dt.and_utc().timestamp_micros())
}

/// Give a cell its column's type, or say why it does not fit.
pub fn convert<'a>(
    cell: Cell<'a>,
    ty: ColumnType,
    format: Option<&str>,
) -> Result<Value<'a>, String> {
    let wrong = |shown: String| format!("wrong type: {shown} is not {}", ty.noun());
    match (cell, ty) {
        (Cell::Null, _) => Ok(Value::Null),
        (Cell::Text(s), ColumnType::Text) => Ok(Value::Text(s)),
        (Cell::Text(s), _) if is_null_token(s) => Ok(Value::Null),
        (Cell::Text(s), ColumnType::Integer) => parse_int(s)
            .map(Value::Int)
            .ok_or_else(|| wrong(format!("'{}'", clip(s)))),
        (Cell::Text(s), ColumnType::Float) => parse_float(s)
            .map(Value::Float)
            .ok_or_else(|| wrong(format!("'{}'", clip(s)))),
        (Cell::Text(s), ColumnType::Boolean) => parse_bool(s)
            .map(Value::Bool)
            .ok_or_else(|| wrong(format!("'{}'", clip(s)))),
        (Cell::Text(s), ColumnType::Date) => parse_date(s, format)
            .map(Value::Date)
            .ok_or_else(|| wrong(format!("'{}'", clip(s)))),
        (Cell::Text(s), ColumnType::Timestamp) => parse_timestamp(s, format)
            .map(Value::Timestamp)
            .ok_or_else(|| wrong(format!("'{}'", clip(s)))),
        (Cell::Bool(b), ColumnType::Boolean) => Ok(Value::Bool(b)),
        (Cell::Int(i), ColumnType::Integer) => Ok(Value::Int(i)),
        (Cell::Int(i), ColumnType::Float) => Ok(Value::Float(i as f64)),
        (Cell::Float(f), ColumnType::Float) => Ok(Value::Float(f)),
        (Cell::Bool(b), _) => Err(wrong(b.to_string())),
        (Cell::Int(i), _) => Err(wrong(i.to_string())),
        (Cell::Float(f), _) => Err(wrong(f.to_string())),
    }
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// What a sample says a column may be: the narrowest type every value fits.
#[derive(Debug, Clone)]
pub struct Inference {
    candidates: [bool; 5], // boolean, integer, float, date, timestamp
    non_null: u64,
    json_text: bool,
}

impl Default for Inference {
    fn default() -> Self {
        Inference {
            candidates: [true; 5],
            non_null: 0,
            json_text: false,
        }
    }
}

impl Inference {
    pub fn observe(&mut self, cell: Cell<'_>) {
        match cell {
            Cell::Null => {}
            Cell::Text(s) if is_null_token(s) => {}
            Cell::Text(s) => {
                self.non_null += 1;
                let c = &mut self.candidates;
                if c[0] && parse_bool(s).is_none() {
                    c[0] = false;
                }
                if c[1] && parse_int(s).is_none() {
                    c[1] = false;
                }
                if c[2] && parse_float(s).is_none() {
                    c[2] = false;
                }
                if c[3] && parse_date(s, None).is_none() {
                    c[3] = false;
                }
                if c[4] && parse_timestamp(s, None).is_none() {
                    c[4] = false;
                }
            }
            Cell::Bool(_) => {
                self.non_null += 1;
                self.json_text = true;
                self.candidates = [self.candidates[0], false, false, false, false];
            }
            Cell::Int(_) => {
                self.non_null += 1;
                self.json_text = true;
                let c = &mut self.candidates;
                *c = [false, c[1], c[2], false, false];
            }
            Cell::Float(_) => {
                self.non_null += 1;
                self.json_text = true;
                let c = &mut self.candidates;
                *c = [false, false, c[2], false, false];
            }
        }
    }

    /// A JSON string among numbers makes the column text.
    pub fn observe_json_string(&mut self, s: &str) {
        if self.json_text {
            self.candidates = [false; 5];
        }
        self.observe(Cell::Text(s));
    }

    pub fn decide(&self) -> ColumnType {
        if self.non_null == 0 {
            return ColumnType::Text;
        }
        let order = [
            ColumnType::Boolean,
            ColumnType::Integer,
            ColumnType::Float,
            ColumnType::Date,
            ColumnType::Timestamp,
        ];
        order
            .iter()
            .zip(self.candidates)
            .find(|(_, ok)| *ok)
            .map(|(t, _)| *t)
            .unwrap_or(ColumnType::Text)
    }
}

/// A column being built into an Arrow array.
pub enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Integer(Int64Builder),
    Float(Float64Builder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Text(StringBuilder),
}

impl ColumnBuilder {
    pub fn new(ty: ColumnType, capacity: usize) -> ColumnBuilder {
        match ty {
            ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Integer => ColumnBuilder::Integer(Int64Builder::with_capacity(capacity)),
            ColumnType::Float => ColumnBuilder::Float(Float64Builder::with_capacity(capacity)),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity))
            }
            ColumnType::Text => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
        }
    }

    /// Append a value already converted to this column's type.
    pub fn append(&mut self, value: Value<'_>) {
        match (self, value) {
            (ColumnBuilder::Boolean(b), Value::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Integer(b), Value::Int(v)) => b.append_value(v),
            (ColumnBuilder::Float(b), Value::Float(v)) => b.append_value(v),
            (ColumnBuilder::Date(b), Value::Date(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Value::Timestamp(v)) => b.append_value(v),
            (ColumnBuilder::Text(b), Value::Text(v)) => b.append_value(v),
            (builder, _) => builder.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Boolean(b) => b.append_null(),
            ColumnBuilder::Integer(b) => b.append_null(),
            ColumnBuilder::Float(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Text(b) => b.append_null(),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Integer(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[&str]) -> ColumnType {
        let mut inf = Inference::default();
        for v in values {
            inf.observe(Cell::Text(v));
        }
        inf.decide()
    }

    #[test]
    fn plain_timestamps_take_the_fast_path_and_agree_with_chrono() {
        for t in [
            "2018-01-01 02:06:00",
            "2018-12-31T23:59:59",
            "1999-02-28 00:00:01",
        ] {
            let slow = NaiveDateTime::parse_from_str(&t.replacen(' ', "T", 1), "%Y-%m-%dT%H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_micros();
            assert_eq!(parse_timestamp(t, None), Some(slow), "{t}");
        }
        for bad in [
            "2018-02-30 00:00:00",
            "2018-01-01 24:00:00",
            "2018-01-01 0a:00:00",
            "2018/01/01 00:00:00",
        ] {
            assert!(plain_timestamp(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(
            parse_timestamp("2018-01-01 02:06:00.5", None).is_some(),
            "fractions take the slow path"
        );
    }

    #[test]
    fn inference_takes_the_narrowest_type_every_value_fits() {
        assert_eq!(infer(&["1", "2", "NA", ""]), ColumnType::Integer);
        assert_eq!(infer(&["1", "2.5"]), ColumnType::Float);
        assert_eq!(infer(&["08001", "08002"]), ColumnType::Text);
        assert_eq!(infer(&["true", "false"]), ColumnType::Boolean);
        assert_eq!(infer(&["2012-01-01", "2012-01-02"]), ColumnType::Date);
        assert_eq!(
            infer(&["2018-01-01 02:06:00", "2018-01-01T02:21:00Z"]),
            ColumnType::Timestamp
        );
        assert_eq!(infer(&["1/1/18 2:06"]), ColumnType::Text);
        assert_eq!(infer(&["inf", "nan"]), ColumnType::Text);
        assert_eq!(infer(&["NA", ""]), ColumnType::Text);
    }

    #[test]
    fn conversion_says_what_did_not_fit() {
        let err = convert(Cell::Text("abc"), ColumnType::Integer, None).unwrap_err();
        assert_eq!(err, "wrong type: 'abc' is not an integer");
        assert!(matches!(
            convert(
                Cell::Text("1/1/18 2:06"),
                ColumnType::Timestamp,
                Some("%m/%d/%y %H:%M")
            ),
            Ok(Value::Timestamp(1514772360000000))
        ));
        assert!(Declared::parse("integer:%Y").is_err());
        assert!(Declared::parse("complex").is_err());
    }
}
