//! A tiny aligned-column table printer whose padding respects the display width of CJK text.

use std::io::{self, Write};

/// Columns are separated by this many spaces.
const COLUMN_GAP: usize = 2;

/// Rows of text cells printed under a header, each column padded to its widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty and extra cells are kept as further columns.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the header and rows, one line each, every line ending in a newline.
    pub fn render(&self) -> String {
        let column_count = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut column_widths = vec![0; column_count];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (index, cell) in line.iter().enumerate() {
                column_widths[index] = column_widths[index].max(display_width(cell));
            }
        }
        let mut rendered = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (index, width) in column_widths.iter().enumerate() {
                let cell = line.get(index).map(String::as_str).unwrap_or("");
                text.push_str(cell);
                if index + 1 < column_count {
                    let padding = width - display_width(cell) + COLUMN_GAP;
                    text.extend(std::iter::repeat_n(' ', padding));
                }
            }
            // The last column is not padded, but an empty last cell would still leave the gap.
            rendered.push_str(text.trim_end());
            rendered.push('\n');
        }
        rendered
    }

    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self.render().as_bytes())
    }
}

/// The number of terminal columns `text` takes: two for East Asian wide characters, one otherwise.
pub fn display_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(character: char) -> usize {
    match u32::from(character) {
        0x1100..=0x115F
        | 0x2E80..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 => 2,
        _ => 1,
    }
}
