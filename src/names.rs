//! Validation of the names that travel through CometQL, the comet WebSocket and SIP.

/// Characters allowed in pipe, event, conference and profile names.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Why a pipe name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeNameError {
    TooLong,
    TooShort,
    BadChars,
}

/// Pipe names: 3..=64 characters of `[A-Za-z0-9_-]`.
pub fn check_pipe(name: &str) -> Result<(), PipeNameError> {
    if name.len() > 64 {
        Err(PipeNameError::TooLong)
    } else if name.len() < 3 {
        Err(PipeNameError::TooShort)
    } else if !name.chars().all(is_name_char) {
        Err(PipeNameError::BadChars)
    } else {
        Ok(())
    }
}

/// Event names: up to 64 characters of `[A-Za-z0-9_-]`; empty is allowed.
pub fn check_event(name: &str) -> Result<(), PipeNameError> {
    if name.len() > 64 {
        Err(PipeNameError::TooLong)
    } else if !name.chars().all(is_name_char) {
        Err(PipeNameError::BadChars)
    } else {
        Ok(())
    }
}

/// Conference and profile names: 1..=64 characters of `[A-Za-z0-9_-]`.
pub fn is_conference_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(is_name_char)
}

/// users_auth hashes: up to 32 characters of `[0-9A-Za-z=+/_]`, not empty (an empty hash would
/// let an anonymous connection pass as that user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashError {
    Empty,
    TooLong,
    BadChars,
}

pub fn check_hash(hash: &str) -> Result<(), HashError> {
    if !hash
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '+' | '/' | '_'))
    {
        Err(HashError::BadChars)
    } else if hash.len() > 32 {
        Err(HashError::TooLong)
    } else if hash.is_empty() {
        Err(HashError::Empty)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes() {
        assert_eq!(check_pipe("web_chat"), Ok(()));
        assert_eq!(check_pipe("ab"), Err(PipeNameError::TooShort));
        assert_eq!(check_pipe(&"a".repeat(65)), Err(PipeNameError::TooLong));
        assert_eq!(check_pipe("a b c"), Err(PipeNameError::BadChars));
        assert_eq!(check_event(""), Ok(()));
        assert_eq!(check_event("a.b"), Err(PipeNameError::BadChars));
    }

    #[test]
    fn hashes_and_conferences() {
        assert_eq!(check_hash("aB3=+/_"), Ok(()));
        assert_eq!(check_hash(""), Err(HashError::Empty));
        assert_eq!(check_hash(&"a".repeat(33)), Err(HashError::TooLong));
        assert_eq!(check_hash("a b"), Err(HashError::BadChars));
        assert!(is_conference_name("101"));
        assert!(is_conference_name("room-1_A"));
        assert!(!is_conference_name(""));
        assert!(!is_conference_name("a*b"));
        assert!(!is_conference_name(&"1".repeat(65)));
    }
}
