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
    if topic.contains(['+', '#']) {
        return Err(DecodeError::WildcardInTopicName);
    }
    if topic.contains('\0') {
        return Err(DecodeError::InvalidUtf8 { field: "topic (contains NUL)" });
    }
    Ok(())
}

/// A subscription filter: `#` only alone as the last level, `+` only alone in a level.
pub fn validate_topic_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if filter.len() > u16::MAX as usize {
        return Err(DecodeError::StringTooLong);
    }
    if filter.contains('\0') {
        return Err(DecodeError::InvalidUtf8 { field: "topic filter (contains NUL)" });
    }
    let levels = filter.split('/').count();
    for (i, level) in filter.split('/').enumerate() {
        let bad_hash = level.contains('#') && (level != "#" || i + 1 != levels);
        let bad_plus = level.contains('+') && level != "+";
        if bad_hash || bad_plus {
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
}
