//! The one table renderer: columns as wide as their widest cell, so long names never break the
//! layout; two spaces between columns; numbers right-aligned; no borders, like `zfs list`.
//! Built on comfy-table.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement};

#[derive(Debug)]
pub struct Table {
    t: comfy_table::Table,
    right: Vec<usize>,
    columns: usize,
}

impl Table {
    /// A table with `headers`; the columns numbered in `right` are right-aligned (sizes, counts).
    pub fn new(headers: &[&str], right: &[usize]) -> Table {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(headers.iter().copied());
        Table {
            t,
            right: right.to_vec(),
            columns: headers.len(),
        }
    }

    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        // A cell's own line breaks would break the row: shown as spaces.
        self.t.add_row(
            cells
                .into_iter()
                .map(|c| c.as_ref().replace(['\n', '\r'], " "))
                .collect::<Vec<_>>(),
        );
        self
    }

    pub fn is_empty(&self) -> bool {
        self.t.row_count() == 0
    }

    /// The text, a line per row (the header first), each ending in `\n`.
    pub fn render(&mut self) -> String {
        for i in 0..self.columns {
            if let Some(c) = self.t.column_mut(i) {
                let last = i + 1 == self.columns;
                c.set_padding((0, if last { 0 } else { 2 }));
                c.set_constraint(ColumnConstraint::ContentWidth);
                if self.right.contains(&i) {
                    c.set_cell_alignment(CellAlignment::Right);
                }
            }
        }
        let mut out = String::new();
        for l in self.t.to_string().lines() {
            out.push_str(l.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_longest_cell_and_numbers_align_right() {
        let mut t = Table::new(&["NAME", "SIZE", "STATE"], &[1]);
        t.row(["web", "10G", "ready"]);
        t.row([
            "a-volume-with-a-very-long-name-indeed",
            "512M",
            "not\nready",
        ]);
        let s = t.render();
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3, "{s}");
        assert_eq!(
            lines[0],
            "NAME                                   SIZE  STATE"
        );
        assert_eq!(
            lines[1],
            "web                                     10G  ready"
        );
        assert_eq!(
            lines[2],
            "a-volume-with-a-very-long-name-indeed  512M  not ready"
        );
        let mut e = Table::new(&["A"], &[]);
        assert!(e.is_empty());
        assert_eq!(e.render(), "A\n");
    }
}
