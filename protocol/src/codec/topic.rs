//! Topic names and filters (spec 4.7): validation and matching.

use super::DecodeError;

/// A topic a PUBLISH may carry: non-empty, no wildcards, no NUL, fits a u16 length.
pub fn validate_topic_name(topic: &str) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if topic.len() > u16::MAX as usize {
        return Err(DecodeError::StringTooLong);
    }
    match first_nul_or_wildcard(topic.as_bytes()) {
        Some(0) => Err(DecodeError::InvalidUtf8 { field: "topic (contains NUL)" }),
        Some(_) => Err(DecodeError::WildcardInTopicName),
        None => Ok(()),
    }
}

/// The first NUL, `+` or `#` in `bytes`. Run on every PUBLISH both ways, so eight bytes at
/// a time: a byte loop cost the component about 15 instructions a byte (callgrind, guest
/// with names), and `str::contains` with char patterns about a kilobyte of code; the
/// `memchr` crate's `memchr3` does the same as this, in more code than the component has
/// room for.
fn first_nul_or_wildcard(bytes: &[u8]) -> Option<u8> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // Non-zero exactly when some byte of `x` is zero (which one it does not say).
    let any_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    // Whole words while none holds one; then bytes, from the word that does (or the tail).
    let mut rest = bytes;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let x = u64::from_le_bytes(*word);
        if any_zero(x) | any_zero(x ^ (ONES * u64::from(b'+'))) | any_zero(x ^ (ONES * u64::from(b'#'))) != 0 {
            break;
        }
        rest = tail;
    }
    rest.iter().copied().find(|&c| c == 0 || c == b'+' || c == b'#')
}

/// A subscription filter: `#` only alone as the last level, `+` only alone in a level.
pub fn validate_topic_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if filter.len() > u16::MAX as usize {
        return Err(DecodeError::StringTooLong);
    }
    let b = filter.as_bytes();
    if b.contains(&0) {
        return Err(DecodeError::InvalidUtf8 { field: "topic filter (contains NUL)" });
    }
    for (i, &c) in b.iter().enumerate() {
        let last = i + 1 == b.len();
        let alone = (i == 0 || b[i - 1] == b'/') && (last || b[i + 1] == b'/');
        if (c == b'+' && !alone) || (c == b'#' && !(alone && last)) {
            return Err(DecodeError::InvalidTopicFilter);
        }
    }
    Ok(())
}

/// Does `topic` match `filter`? Topics starting with `$` are not matched by a filter that
/// starts with a wildcard (spec 4.7.2).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn wildcards_match_as_the_spec_says() {
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(topic_matches("+", "a"));
        assert!(!topic_matches("+", "a/b"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }

    #[test]
    fn filters_with_misplaced_wildcards_are_rejected() {
        assert!(validate_topic_filter("a/#/b").is_err());
        assert!(validate_topic_filter("a/b#").is_err());
        assert!(validate_topic_filter("a/+b").is_err());
        assert!(validate_topic_filter("").is_err());
        assert!(validate_topic_filter("a/+/#").is_ok());
        assert!(validate_topic_name("a/+").is_err());
    }

    /// The rule as the spec words it, level by level: the byte loop must agree.
    fn filter_by_levels(filter: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        levels.iter().enumerate().all(|(i, l)| (!l.contains('#') || (*l == "#" && i + 1 == levels.len())) && (!l.contains('+') || *l == "+"))
    }

    proptest::proptest! {
        #[test]
        fn filter_check_agrees_with_the_level_by_level_rule(filter in "[a+#/]{1,8}") {
            proptest::prop_assert_eq!(validate_topic_filter(&filter).is_ok(), filter_by_levels(&filter));
        }

        #[test]
        fn topic_name_check_refuses_exactly_wildcards_and_nul(topic in "[a+#/\\x00é]{1,40}") {
            let ok = !topic.contains(['+', '#', '\0']);
            proptest::prop_assert_eq!(validate_topic_name(&topic).is_ok(), ok);
        }

        /// Word by word, every byte value in every position: the first hit, as a byte loop finds it.
        #[test]
        fn the_word_scan_finds_the_first_nul_or_wildcard(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), at in 0usize..40, c in proptest::sample::select(&[0u8, b'+', b'#'][..])) {
            let mut bytes = bytes;
            if at < bytes.len() {
                bytes[at] = c;
            }
            let expected = bytes.iter().copied().find(|&b| b == 0 || b == b'+' || b == b'#');
            proptest::prop_assert_eq!(first_nul_or_wildcard(&bytes), expected);
        }
    }
}
