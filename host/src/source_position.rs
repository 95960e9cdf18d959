//! Pointing at the place in a text file where something is wrong, for every file format the
//! hosts read (scenario files, board configs): `line 12, column 9: <why>` and the line itself.

/// `message` located at byte offset `at` of `text`, with the offending line quoted.
pub fn describe(text: &str, at: usize, message: &str) -> String {
    let at = at.min(text.len());
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    let source = text.lines().nth(line - 1).unwrap_or("").trim_end();
    format!("line {line}, column {col}: {message}\n    {line} | {source}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_line_and_column_and_quotes_the_line() {
        let d = super::describe("a = 1\nbb = x\n", 11, "bad value");
        assert_eq!(d, "line 2, column 6: bad value\n    2 | bb = x");
    }

    #[test]
    fn offset_past_the_end_points_at_the_last_line() {
        assert!(super::describe("a", 99, "m").starts_with("line 1, column 2"));
    }
}
