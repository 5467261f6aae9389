//! Plain-text tables with aligned columns.

/// Renders a table: a header row and data rows, columns padded to their widest
/// cell and separated by three spaces; the last column is not padded.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths = widths(headers, rows);
    let mut out = line(&widths, headers.iter().copied());
    for row in rows {
        out.push_str(&line(&widths, row.iter().map(String::as_str)));
    }
    out
}

/// The width of each column: its widest cell, header included.
pub fn widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (cell, w) in row.iter().zip(widths.iter_mut()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// One line of a table with these column widths (a longer cell pushes the rest right:
/// rows that arrive later, as in `get -w`, keep the columns of the first screen).
pub fn line<'a>(widths: &[usize], cells: impl Iterator<Item = &'a str>) -> String {
    let cols = widths.len();
    let mut text = String::new();
    for (i, cell) in cells.enumerate().take(cols) {
        // Colour wraps the text only: the padding is counted on the text.
        text.push_str(&crate::colour::cell(cell));
        if i + 1 < cols {
            let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    let mut text = text.trim_end().to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned() {
        let t = render(
            &["NAME", "PHASE", "AGE"],
            &[
                vec!["web".into(), "Running".into(), "5s".into()],
                vec!["database".into(), "".into(), "3m".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME       PHASE     AGE\nweb        Running   5s\ndatabase             3m\n"
        );
        assert_eq!(render(&["A", "B"], &[]), "A   B\n");
    }
}
