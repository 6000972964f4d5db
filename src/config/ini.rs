//! A small INI reader that remembers where every value came from.
//!
//! CppComet's `comet.ini` is plain INI: `[section]` headers, `key = value` lines, `;` or `#`
//! comments (also after a value, as CppComet read them; quote a value to keep those characters). We keep the line number of every entry so that warnings and errors can point at
//! `file:line`, which the INI crates on crates.io do not report.

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A line that is neither a section, an entry, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub text: String,
}

/// Parses INI text into entries in file order. Section and key names are lower-cased; values are
/// trimmed and may be wrapped in double quotes (which are removed).
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with(';') || t.starts_with('#') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(SyntaxError {
                    line,
                    text: raw.to_string(),
                });
            };
            section = name.trim().to_ascii_lowercase();
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(SyntaxError {
                line,
                text: raw.to_string(),
            });
        };
        let v = v.trim();
        // A double-quoted value is taken as it is (it may contain `;` and `#`); otherwise, as in
        // CppComet, a `;` or `#` starts a comment.
        let value = match v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(quoted) => quoted,
            None => v.split(['#', ';']).next().unwrap_or("").trim_end(),
        };
        out.push(Entry {
            section: section.clone(),
            key: k.trim().to_ascii_lowercase(),
            value: value.to_string(),
            line,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_quotes() {
        let e = parse("; c\n[Main]\npassword = \"a b\"\n# x\n\n[ws]\nport=8087\n").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0],
            Entry {
                section: "main".into(),
                key: "password".into(),
                value: "a b".into(),
                line: 3
            }
        );
        assert_eq!(e[1].section, "ws");
        assert_eq!(e[1].value, "8087");
        assert_eq!(e[1].line, 7);
    }

    #[test]
    fn garbage_line_is_reported_with_its_number() {
        let err = parse("[main]\nthis is not ini\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse("[main\n").unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn trailing_comments_are_cut_unless_quoted() {
        let e =
            parse("[ws]\nport = 8087 ; the browser port\n[main]\npassword = \"a;b#c\"\nx = y#z\n")
                .unwrap();
        assert_eq!(e[0].value, "8087");
        assert_eq!(e[1].value, "a;b#c");
        assert_eq!(e[2].value, "y");
    }

    #[test]
    fn values_may_contain_equals_signs() {
        let e = parse("[sip]\nfreeswitch = []Server=a,Pwd=b\n").unwrap();
        assert_eq!(e[0].value, "[]Server=a,Pwd=b");
    }
}
