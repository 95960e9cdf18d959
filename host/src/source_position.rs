//! Pointing at the place in a text file where something is wrong, for every file format the
//! hosts read (scenario files, board configs): `line 12, column 9: <why>` and the line itself.
//!
//! toml and serde place what they refuse themselves (a wrong type, an unknown key). What only
//! a later check can refuse (a value out of range, two keys that contradict each other, a
//! config the client would not take) is named by its key path, and `locate` finds where
//! that path is written.

#[cfg(feature = "toml")]
use toml::{
    de::{DeString, DeTable, DeValue},
    Spanned,
};

/// `message` located at byte offset `at` of `text`, with the offending line quoted.
pub fn describe(text: &str, at: usize, message: &str) -> String {
    let at = at.min(text.len());
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    let source = text.lines().nth(line - 1).unwrap_or("").trim_end();
    format!("line {line}, column {col}: {message}\n    {line} | {source}")
}

#[cfg(feature = "toml")]
/// `message` about the key at `path`, located where `text` writes it (see `locate`), or as
/// it is if the text does not write any of it.
pub fn describe_key(text: &str, path: &str, message: &str) -> String {
    match locate(text, path) {
        Some(at) => describe(text, at, message),
        None => message.to_string(),
    }
}

#[cfg(feature = "toml")]
/// Where the key at `path` is written in the TOML `text`, as error messages name keys:
/// `tick_ms`, `device.subscribe[0].qos`, `fault[2].at_s`. The byte offset of the deepest
/// part of the path the text writes (the table, when the key itself is left to its
/// default), or `None` when it writes none of it or does not parse.
///
/// A part of the path may also name a config key as the component's `Config` spells it
/// (`keepalive_secs`, what a [`mqtt_protocol::ConfigError`] names): it then finds whichever
/// key of the one settings schema sets it, alias or not (`keepalive_s`, `keepalive`).
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut at = None;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, indexes) = part.split_once('[').map_or((part, ""), |(n, rest)| (n, rest));
        let Some((key, mut value)) = entry(text, table, name) else { return at };
        at = Some(key.span().start);
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            let element = match (value.get_ref(), index.trim_end_matches(']').parse::<usize>()) {
                (DeValue::Array(items), Ok(i)) => items.get(i),
                _ => None,
            };
            let Some(element) = element else { return at };
            value = element;
            at = Some(value.span().start);
        }
        match value.get_ref() {
            DeValue::Table(inner) if parts.peek().is_some() => table = inner,
            _ => return at,
        }
    }
    at
}

#[cfg(feature = "toml")]
/// The entry of `table` called `name`, or else the one that sets the config key `name`.
fn entry<'t, 'i>(text: &str, table: &'t DeTable<'i>, name: &str) -> Option<(&'t Spanned<DeString<'i>>, &'t Spanned<DeValue<'i>>)> {
    table.iter().find(|(key, _)| key.get_ref() == name).or_else(|| {
        table.iter().find(|(key, value)| {
            // The entry alone is a document of one key: what it sets is what it means.
            let written = text.get(key.span().start..value.span().end).unwrap_or_default();
            toml::from_str::<crate::Settings>(written).is_ok_and(|s| crate::settings::sets_key(|c| s.apply_to(c), name))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_line_and_column_and_quotes_the_line() {
        let d = describe("a = 1\nbb = x\n", 11, "bad value");
        assert_eq!(d, "line 2, column 6: bad value\n    2 | bb = x");
    }

    #[test]
    fn offset_past_the_end_points_at_the_last_line() {
        assert!(describe("a", 99, "m").starts_with("line 1, column 2"));
    }

    #[cfg(feature = "toml")]
    const SCENARIO: &str = "duration_s = 10\n\
        [device]\n\
        keepalive = 5\n\
        subscribe = [{ filter = \"a\", qos = 1 }, { filter = \"b\", qos = 3 }]\n\
        \n\
        [[fault]]\n\
        kind = \"link_down\"\n\
        at_s = 1\n\
        \n\
        [[fault]]\n\
        kind = \"refuse\"\n\
        at_s = 400\n";

    #[cfg(feature = "toml")]
    fn line_of(path: &str) -> Option<usize> {
        locate(SCENARIO, path).map(|at| SCENARIO[..at].matches('\n').count() + 1)
    }

    #[test]
    #[cfg(feature = "toml")]
    fn a_key_path_is_found_where_it_is_written() {
        assert_eq!(line_of("duration_s"), Some(1));
        assert_eq!(line_of("device.subscribe[1].qos"), Some(4));
        assert_eq!(line_of("fault[1].at_s"), Some(12));
        assert_eq!(line_of("fault[0].kind"), Some(7));
    }

    #[test]
    #[cfg(feature = "toml")]
    fn a_config_key_is_found_under_the_name_the_file_gives_it() {
        // `keepalive` is an alias of `keepalive_s`, which `Config` calls `keepalive_secs`.
        assert_eq!(line_of("device.keepalive_secs"), Some(3));
    }

    #[test]
    #[cfg(feature = "toml")]
    fn a_key_left_to_its_default_points_at_its_table_and_a_path_not_written_at_nothing() {
        assert_eq!(line_of("device.response_time_ms"), Some(2));
        assert_eq!(line_of("fault[1].for_s"), line_of("fault[1]"));
        assert!(line_of("fault[1]").is_some_and(|l| (10..=11).contains(&l)), "{:?}", line_of("fault[1]"));
        assert_eq!(line_of("tick_ms"), None);
        assert_eq!(line_of("fault[7].at_s"), line_of("fault"));
        assert_eq!(locate("not toml = = 1", "a"), None);
    }
}
