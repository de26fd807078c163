//! Helpers that turn TOML parse errors and byte spans into `file:line:column` errors.

use crate::Error;

/// The 1-based line and column (counted in characters, as editors do) of a byte offset in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // A span may in principle point inside a multi-byte character; step back to a boundary.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// An [`Error::Source`] at byte `offset` of `text`.
pub fn error_at(file_name: &str, text: &str, offset: usize, problem: impl Into<String>) -> Error {
    let (line, column) = line_column(text, offset);
    Error::Source {
        file: file_name.to_string(),
        line,
        column,
        problem: problem.into(),
    }
}

/// Parses `text` as TOML into `T`, turning syntax and type errors into located [`Error::Source`].
pub fn parse_toml<T: serde::de::DeserializeOwned>(file_name: &str, text: &str) -> Result<T, Error> {
    toml::from_str(text).map_err(|error| {
        let offset = error.span().map_or(0, |span| span.start);
        error_at(file_name, text, offset, error.message().trim().to_string())
    })
}

/// Formats an integer with thousands separators, for readable reasons ("120,000,000 CNY").
pub fn grouped(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        let digits_left = digits.len() - index;
        // A separator before every group of three counted from the right.
        if index > 0 && digits_left / 3 * 3 == digits_left {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based_and_counts_characters() {
        let text = "a = 1\nname = \"东湖\"\nx";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        let x = text.rfind('x').unwrap();
        assert_eq!(line_column(text, x), (3, 1));
        let quote_end = text.rfind('"').unwrap();
        assert_eq!(line_column(text, quote_end), (2, 11));
    }

    #[test]
    fn grouped_inserts_separators() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(100_000_000), "100,000,000");
    }
}
