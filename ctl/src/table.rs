//! Plain-text tables with aligned columns.

/// Renders a table: a header row and data rows, columns padded to their widest
/// cell and separated by three spaces; the last column is not padded.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate().take(cols) {
            if i + 1 < cols {
                text.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
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
