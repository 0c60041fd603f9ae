//! `${env:NAME}` substitution, done on the text before YAML parsing.
//!
//! As in the OpenTelemetry Collector, the value is pasted in place of the
//! reference and then parsed as YAML, so `interval: ${env:I}` with `I=30s`
//! reads as `interval: 30s`, and a number stays a number. Forms:
//!
//! - `${env:NAME}`: the variable's value; an error naming the variable and
//!   the line if it is unset (a variable set to the empty string is empty).
//! - `${env:NAME:-default}`: the default when the variable is unset.
//! - `${NAME}`, `${NAME:-default}`: the same; `env` is the Collector's
//!   default scheme. Other schemes (`file:`, `http:`, `yaml:`) are errors.
//! - `$$`: a literal `$` (so `$${env:X}` is the text `${env:X}`).
//! - any other `${...}` is an error; a `$` followed by anything else is kept.
//!
//! References in comments are left alone. Values may not contain line
//! breaks, so every line keeps its number; columns on a line with a
//! substitution are mapped back to the text as written
//! ([`Substituted::original_column`]).

use crate::error::{ConfigError, Location};

/// The text after substitution, with what is needed to map its columns back.
#[derive(Debug)]
pub(crate) struct Substituted {
    pub(crate) text: String,
    edits: Vec<Edit>,
}

/// One replaced span on one line; columns are 1-based, in characters.
#[derive(Debug, Clone, Copy)]
struct Edit {
    line: u32,
    new_start: u32,
    new_len: u32,
    orig_start: u32,
    orig_len: u32,
}

impl Substituted {
    /// The column in the text as written that corresponds to `column` of
    /// `line` in the substituted text. Inside a substituted value it is the
    /// column of the reference's `$`.
    pub(crate) fn original_column(&self, line: u32, column: u32) -> u32 {
        let mut delta: i64 = 0;
        for edit in self.edits.iter().filter(|e| e.line == line) {
            if column < edit.new_start {
                break;
            }
            if column < edit.new_start + edit.new_len {
                return edit.orig_start;
            }
            delta += i64::from(edit.orig_len) - i64::from(edit.new_len);
        }
        u32::try_from(i64::from(column) + delta).unwrap_or(column)
    }
}

/// Replaces `${env:...}` references and `$$` escapes in `text`.
/// `lookup` returns a variable's value, `None` when it is unset.
pub(crate) fn substitute(
    text: &str,
    origin: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, ConfigError> {
    if !text.contains('$') {
        return Ok(Substituted {
            text: text.to_owned(),
            edits: Vec::new(),
        });
    }
    let mut out = Substituted {
        text: String::with_capacity(text.len()),
        edits: Vec::new(),
    };
    let mut scanner = Scanner::default();
    for (index, line) in text.split('\n').enumerate() {
        if index > 0 {
            out.text.push('\n');
        }
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        scanner.line(line, line_no, origin, lookup, &mut out)?;
    }
    Ok(out)
}

/// YAML context carried from one line to the next, just enough to tell
/// comments apart from values.
#[derive(Debug, Default)]
struct Scanner {
    /// Inside a quoted scalar that started on an earlier line.
    quote: Option<char>,
    /// Inside a block scalar (`|`, `>`) whose parent line had this indent.
    block_parent_indent: Option<usize>,
}

impl Scanner {
    fn line(
        &mut self,
        line: &str,
        line_no: u32,
        origin: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
        out: &mut Substituted,
    ) -> Result<(), ConfigError> {
        let chars: Vec<char> = line.chars().collect();
        let indent = chars.iter().take_while(|c| **c == ' ').count();
        let blank = chars.iter().all(|c| c.is_whitespace());
        let in_block = match self.block_parent_indent {
            Some(parent) if blank || indent > parent => true,
            _ => {
                self.block_parent_indent = None;
                false
            }
        };

        // Column (1-based, chars) in the output line of the next char pushed.
        let mut new_col: u32 = 1;
        let mut i = 0;
        // Last non-space char outside quotes, to tell where a scalar starts.
        let mut last_sig: Option<char> = None;
        // Where the uncommented part of the line ends (for block detection).
        let mut content_end = chars.len();
        while i < chars.len() {
            let c = chars[i];
            let col = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if !in_block {
                match self.quote {
                    Some('\'') if c == '\'' => {
                        if chars.get(i + 1) == Some(&'\'') {
                            out.text.push_str("''");
                            new_col += 2;
                            i += 2;
                            continue;
                        }
                        self.quote = None;
                    }
                    Some('"') if c == '\\' => {
                        out.text.push(c);
                        new_col += 1;
                        i += 1;
                        if let Some(&next) = chars.get(i) {
                            out.text.push(next);
                            new_col += 1;
                            i += 1;
                        }
                        continue;
                    }
                    Some('"') if c == '"' => self.quote = None,
                    Some(_) => {}
                    None => {
                        let after_space = i == 0 || chars[i - 1].is_whitespace();
                        if c == '#' && after_space {
                            // A comment: copied as written.
                            content_end = i;
                            out.text.extend(&chars[i..]);
                            break;
                        }
                        let scalar_start =
                            matches!(last_sig, None | Some(':' | '-' | '[' | '{' | ',' | '?'))
                                && (after_space || matches!(chars[i - 1], '[' | '{' | ','));
                        if (c == '"' || c == '\'') && scalar_start {
                            self.quote = Some(c);
                        }
                        if !c.is_whitespace() {
                            last_sig = Some(c);
                        }
                    }
                }
            }
            if c != '$' {
                out.text.push(c);
                new_col += 1;
                i += 1;
                continue;
            }
            let (replacement, consumed) = match chars.get(i + 1) {
                Some('$') => ("$".to_owned(), 2),
                Some('{') => reference(&chars[i..], line_no, col, origin, lookup)?,
                _ => {
                    out.text.push('$');
                    new_col += 1;
                    i += 1;
                    continue;
                }
            };
            let new_len = u32::try_from(replacement.chars().count()).unwrap_or(u32::MAX);
            out.edits.push(Edit {
                line: line_no,
                new_start: new_col,
                new_len,
                orig_start: col,
                orig_len: u32::try_from(consumed).unwrap_or(u32::MAX),
            });
            out.text.push_str(&replacement);
            new_col += new_len;
            i += consumed;
        }

        if !in_block && self.quote.is_none() {
            let content: String = chars[..content_end].iter().collect();
            let mut tokens = content.split_whitespace().rev();
            let is_indicator = |t: &str| {
                let mut cs = t.chars();
                matches!(cs.next(), Some('|' | '>'))
                    && cs.all(|c| c.is_ascii_digit() || c == '+' || c == '-')
            };
            if let Some(last) = tokens.next()
                && is_indicator(last)
                && tokens.next().is_some_and(|t| t.ends_with(':') || t == "-")
            {
                self.block_parent_indent = Some(indent);
            }
        }
        Ok(())
    }
}

/// Resolves the `${...}` at the start of `chars`; returns the replacement
/// and how many chars the reference spans.
fn reference(
    chars: &[char],
    line: u32,
    column: u32,
    origin: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, usize), ConfigError> {
    let at = || Location::new(origin, Some(line), Some(column));
    let Some(close) = chars.iter().position(|c| *c == '}') else {
        return Err(ConfigError::Substitution {
            at: at(),
            message: "unterminated `${`: expected `${env:NAME}` (write `$$` for a literal `$`)"
                .to_owned(),
        });
    };
    let inner: String = chars[2..close].iter().collect();
    // `scheme:rest`, unless the first `:` opens a `:-default` (then the
    // reference has no scheme and `env` is meant, as in the Collector).
    let spec = match inner.split_once(':') {
        Some((_, rest)) if rest.starts_with('-') => inner.as_str(),
        Some(("env", rest)) => rest,
        Some((scheme, _)) => {
            return Err(ConfigError::Substitution {
                at: at(),
                message: format!(
                    "unsupported reference `${{{inner}}}`: the `{scheme}:` scheme is not \
                     supported, only environment variables (`${{NAME}}`, `${{env:NAME}}`, \
                     with an optional `:-default`; write `$$` for a literal `$`)"
                ),
            });
        }
        None => inner.as_str(),
    };
    let (name, default) = match spec.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (spec, None),
    };
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
    if !valid_name {
        return Err(ConfigError::Substitution {
            at: at(),
            message: format!(
                "`${{{inner}}}`: `{name}` is not a valid environment variable name \
                 (letters, digits and `_`, not starting with a digit)"
            ),
        });
    }
    if default.is_some_and(|d| d.contains("${")) {
        return Err(ConfigError::Substitution {
            at: at(),
            message: format!("`${{{inner}}}`: nested references in a default are not supported"),
        });
    }
    let value = match (lookup(name), default) {
        (Some(value), _) => value,
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            return Err(ConfigError::UnsetVariable {
                at: at(),
                var: name.to_owned(),
            });
        }
    };
    if value.contains(['\n', '\r']) {
        return Err(ConfigError::Substitution {
            at: at(),
            message: format!(
                "the value of `{name}` contains a line break, which is not supported \
                 (it would move every line below)"
            ),
        });
    }
    Ok((value, close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.test".to_owned()),
            "EMPTY" => Some(String::new()),
            "LONG" => Some("a-much-longer-value".to_owned()),
            "NL" => Some("a\nb".to_owned()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<Substituted, ConfigError> {
        substitute(text, "t.yaml", &env)
    }

    #[test]
    fn replaces_references_and_defaults() {
        let s = sub("a: ${env:HOST}\nb: ${env:MISSING:-dflt}\nc: x${env:EMPTY}y\n").unwrap();
        assert_eq!(s.text, "a: example.test\nb: dflt\nc: xy\n");
        // Set-but-empty is not unset: the default is not used (as in the Collector).
        let s = sub("c: ${env:EMPTY:-dflt}").unwrap();
        assert_eq!(s.text, "c: ");
    }

    #[test]
    fn references_without_a_scheme_are_environment_variables() {
        // The Collector's default scheme is `env`.
        let s = sub("a: ${HOST}\nb: ${MISSING:-dflt}\nc: x${EMPTY:-dflt}y\n").unwrap();
        assert_eq!(s.text, "a: example.test\nb: dflt\nc: xy\n");
        let s = sub("a: $${HOST}\n").unwrap();
        assert_eq!(s.text, "a: ${HOST}\n");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        let s = sub("a: $${env:HOST} costs $$5 or $5\n").unwrap();
        assert_eq!(s.text, "a: ${env:HOST} costs $5 or $5\n");
    }

    #[test]
    fn unset_variable_names_variable_line_and_column() {
        let err = sub("a: 1\n\nb:  ${env:NOPE}\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.yaml:3:5: environment variable `NOPE` is not set (referenced as ${env:NOPE}; \
             set it or give a default: ${env:NOPE:-value})"
        );
    }

    #[test]
    fn comments_are_not_substituted_but_quoted_hashes_are_values() {
        let s = sub("a: 1 # ${env:NOPE} $$\n# ${env:NOPE}\nb: \"x # ${env:HOST}\"\nc: 'it''s # ${env:HOST}'\n").unwrap();
        assert_eq!(
            s.text,
            "a: 1 # ${env:NOPE} $$\n# ${env:NOPE}\nb: \"x # example.test\"\nc: 'it''s # example.test'\n"
        );
    }

    #[test]
    fn block_scalars_are_content_not_comments() {
        let s = sub("a: |\n  x # ${env:HOST}\n\n  y\nb: 1 # ${env:NOPE}\n").unwrap();
        assert_eq!(
            s.text,
            "a: |\n  x # example.test\n\n  y\nb: 1 # ${env:NOPE}\n"
        );
    }

    #[test]
    fn bad_references_are_errors() {
        let msg = |t: &str| sub(t).unwrap_err().to_string();
        assert_eq!(
            msg("a: ${file:/etc/x}"),
            "t.yaml:1:4: unsupported reference `${file:/etc/x}`: the `file:` scheme is not \
             supported, only environment variables (`${NAME}`, `${env:NAME}`, with an \
             optional `:-default`; write `$$` for a literal `$`)"
        );
        assert_eq!(
            msg("a: ${NOPE}"),
            "t.yaml:1:4: environment variable `NOPE` is not set (referenced as ${env:NOPE}; \
             set it or give a default: ${env:NOPE:-value})"
        );
        assert_eq!(
            msg("a: ${env:HOST"),
            "t.yaml:1:4: unterminated `${`: expected `${env:NAME}` (write `$$` for a literal `$`)"
        );
        assert_eq!(
            msg("a: ${env:1X}"),
            "t.yaml:1:4: `${env:1X}`: `1X` is not a valid environment variable name \
             (letters, digits and `_`, not starting with a digit)"
        );
        assert_eq!(
            msg("\na: ${env:NL}"),
            "t.yaml:2:4: the value of `NL` contains a line break, which is not supported \
             (it would move every line below)"
        );
    }

    #[test]
    fn columns_map_back_to_the_text_as_written() {
        // "a: ${env:LONG} b: x": the reference (cols 4..=14) became 19 chars.
        let s = sub("a: ${env:LONG} b\nc: $$x").unwrap();
        assert_eq!(s.text, "a: a-much-longer-value b\nc: $x");
        assert_eq!(s.original_column(1, 2), 2); // before the edit
        assert_eq!(s.original_column(1, 10), 4); // inside the value -> the `$`
        assert_eq!(s.original_column(1, 24), 16); // `b`, after the edit
        assert_eq!(s.original_column(2, 5), 6); // `x` after `$$` -> `$`
        assert_eq!(s.original_column(3, 7), 7); // lines without edits
    }
}
