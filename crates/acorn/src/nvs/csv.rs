//! The CSV format of ESP-IDF's `nvs_partition_gen.py`: a `key,type,encoding,value` header,
//! `namespace` rows, `data` rows with the value inline, and `file` rows whose value is a path
//! resolved against the current directory. Lines starting with `#` are comments.

use std::path::Path;

use acorn_nvs::builder::{ImageBuilder, ImageValue};
use acorn_nvs::{IntValue, ValueType};
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;

/// One row of the CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// 1-based line number in the file.
    pub line: usize,
    /// Key or namespace name.
    pub key: String,
    /// `namespace`, `data` or `file`.
    pub kind: String,
    /// Encoding (`u8` … `i64`, `string`, `hex2bin`, `base64`, `binary`).
    pub encoding: String,
    /// Inline value or file path.
    pub value: String,
}

/// Splits one CSV line into fields (quotes and doubled quotes as Python's csv module reads them).
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    out.push(field);
    out
}

/// Parses the CSV text; `name` is used in error messages.
pub fn parse(text: &str, name: &str) -> Result<Vec<Row>> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty());
    let (header_line, header) = lines.next().ok_or_else(|| {
        anyhow!("{name}: the file is empty; it needs a `key,type,encoding,value` header")
    })?;
    let columns: Vec<String> = fields(header)
        .iter()
        .map(|f| f.trim().to_string())
        .collect();
    let column = |want: &str| {
        columns.iter().position(|c| c == want).ok_or_else(|| {
            anyhow!("{name}:{header_line}: the header has no `{want}` column; it must be `key,type,encoding,value`")
        })
    };
    let (k, t, e, v) = (
        column("key")?,
        column("type")?,
        column("encoding")?,
        column("value")?,
    );
    let mut rows = Vec::new();
    for (line, text) in lines {
        let f = fields(text);
        let get = |i: usize| f.get(i).cloned().unwrap_or_default();
        let row = Row {
            line,
            key: get(k),
            kind: get(t).trim().to_string(),
            encoding: get(e).trim().to_lowercase(),
            value: get(v),
        };
        if row.key.is_empty() {
            bail!("{name}:{line}: the key is empty");
        }
        if row.key.len() > 15 {
            bail!(
                "{name}:{line}: key `{}` is longer than 15 characters",
                row.key
            );
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A row's value, decoded.
enum Decoded {
    Int(IntValue),
    Str(Vec<u8>),
    Blob(Vec<u8>),
}

fn decode(row: &Row, name: &str) -> Result<Decoded> {
    let at = || format!("{name}:{}: key `{}`", row.line, row.key);
    let raw: Vec<u8> = match row.kind.as_str() {
        "data" => row.value.clone().into_bytes(),
        "file" => {
            let path = Path::new(&row.value);
            std::fs::read(path).with_context(|| {
                format!(
                    "{}: cannot read file `{}` (file paths are relative to the current directory)",
                    at(),
                    row.value
                )
            })?
        }
        other => bail!(
            "{}: unknown type `{other}`; use namespace, data or file",
            at()
        ),
    };
    Ok(match row.encoding.as_str() {
        "string" => {
            let text = String::from_utf8(raw)
                .map_err(|_| anyhow!("{}: the string is not valid UTF-8", at()))?;
            if text.contains('\0') {
                bail!("{}: a string cannot contain a NUL byte", at());
            }
            Decoded::Str(text.into_bytes())
        }
        "binary" => Decoded::Blob(raw),
        "hex2bin" => {
            let text = String::from_utf8_lossy(&raw);
            let text = text.trim();
            if text.len() % 2 != 0 {
                bail!("{}: hex2bin value has an odd number of digits", at());
            }
            Decoded::Blob(
                hex::decode(text).map_err(|e| anyhow!("{}: bad hex2bin value: {e}", at()))?,
            )
        }
        "base64" => {
            // Like Python's binascii.a2b_base64: characters outside the alphabet are skipped.
            let clean: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                .collect();
            Decoded::Blob(
                base64::engine::general_purpose::STANDARD
                    .decode(&clean)
                    .map_err(|e| anyhow!("{}: bad base64 value: {e}", at()))?,
            )
        }
        enc => {
            let Some(value_type) = ValueType::from_name(enc).filter(|t| t.is_integer()) else {
                bail!(
                    "{}: unknown encoding `{enc}`; use u8, i8, u16, i16, u32, i32, u64, i64, string, hex2bin, base64 or binary",
                    at()
                );
            };
            let text = String::from_utf8_lossy(&raw);
            let value = IntValue::parse(value_type, &text).ok_or_else(|| {
                anyhow!(
                    "{}: `{}` is not a {enc} (a whole number in the type's range)",
                    at(),
                    text.trim()
                )
            })?;
            Decoded::Int(value)
        }
    })
}

/// Builds an image from parsed rows, as `nvs_partition_gen.py generate` would.
pub fn build(rows: &[Row], name: &str, builder: &mut ImageBuilder) -> Result<()> {
    for row in rows {
        let at = || format!("{name}:{}: key `{}`", row.line, row.key);
        if row.kind == "namespace" {
            builder.namespace(&row.key).with_context(at)?;
            continue;
        }
        let decoded = decode(row, name)?;
        let value = match &decoded {
            Decoded::Int(v) => ImageValue::Int(*v),
            Decoded::Str(s) => ImageValue::Str(s),
            Decoded::Blob(b) => ImageValue::Blob(b),
        };
        builder.add(&row.key, value).with_context(at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_follow_python_csv() {
        assert_eq!(fields(r#"a,"b,c","d""e""#), vec!["a", "b,c", "d\"e"]);
        assert_eq!(fields("ns,namespace,,"), vec!["ns", "namespace", "", ""]);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let text = "key,type,encoding,value\n# comment\nns,namespace,,\nk,data,u8,300\n";
        let rows = parse(text, "x.csv").unwrap();
        let mut builder = ImageBuilder::new(0x3000, None).unwrap();
        let err = build(&rows, "x.csv", &mut builder).unwrap_err().to_string();
        assert!(err.contains("x.csv:4"), "{err}");
    }
}
