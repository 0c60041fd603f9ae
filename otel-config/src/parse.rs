//! The one serde pass over the YAML, and its errors made readable: the
//! file, line and column of the failing value (in the text as written,
//! before `${env:...}` substitution), its key path
//! (`receivers.ebpf.rtt_buckets[2]`) and a message that names what was found.

use serde::Deserialize;

use crate::{ConfigError, Location, RawConfig, env};

pub(crate) fn parse(text: &env::Substituted, origin: &str) -> Result<RawConfig, ConfigError> {
    let options = serde_saphyr::options! { with_snippet: false };
    let mut path = String::new();
    let result = serde_saphyr::with_deserializer_from_str_with_options(&text.text, options, |de| {
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
        RawConfig::deserialize(tracked).inspect_err(|_| {
            path = key_path(&track.path());
        })
    });
    result.map_err(|err| {
        let location = err.location().filter(|loc| loc.line() > 0);
        let line = location.and_then(|loc| u32::try_from(loc.line()).ok());
        let column = location
            .and_then(|loc| u32::try_from(loc.column()).ok())
            .filter(|c| *c > 0);
        let message = parse_message(&err, text, line.zip(column));
        ConfigError::Parse {
            at: Location::new(
                origin,
                line,
                column.zip(line).map(|(c, l)| text.original_column(l, c)),
            ),
            path,
            message,
        }
    })
}

/// `receivers.ebpf.rtt_buckets[2]`: the key path as users write it. The
/// `value` level that [`Spanned`] adds under `service` is not in the file
/// (no field under `service` is called `value`), so it is dropped.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let mut under_service = false;
    for (i, segment) in path.iter().enumerate() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if i == 0 {
                    under_service = key == "service";
                } else if under_service && key == "value" {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// The YAML library's message, made specific where it is terse: a scalar
/// of the wrong type names the text found, as serde's own messages do.
fn parse_message(
    err: &serde_saphyr::Error,
    text: &env::Substituted,
    at: Option<(u32, u32)>,
) -> String {
    use serde_saphyr::MessageFormatter;
    match err {
        serde_saphyr::Error::InvalidScalar { ty, .. } => {
            let ty = match *ty {
                "boolean" | "bool" => "a boolean (true or false)",
                other => other,
            };
            match at.and_then(|(line, column)| scalar_at(&text.text, line, column)) {
                Some(found) if found.parse::<f64>().is_ok() => {
                    format!("invalid value: {found}, expected {ty}")
                }
                Some(found) => format!("invalid type: string {found:?}, expected {ty}"),
                None => format!("invalid value, expected {ty}"),
            }
        }
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key `{key}`")
        }
        serde_saphyr::Error::Eof { .. } if text.text.lines().all(is_blank_or_comment) => {
            "the configuration is empty; it needs `receivers`, `exporters` and \
             `service.pipelines` (see docs/configuration.md)"
                .to_owned()
        }
        _ => serde_saphyr::UserMessageFormatter
            .format_message(err)
            .into_owned(),
    }
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || t == "---"
}

/// The scalar that starts at `line`:`column` (1-based, chars), unquoted.
fn scalar_at(text: &str, line: u32, column: u32) -> Option<String> {
    let line_text = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let start = usize::try_from(column).ok()?.checked_sub(1)?;
    let before: String = line_text.chars().take(start).collect();
    let rest: String = line_text.chars().skip(start).collect();
    let mut chars = rest.chars();
    match chars.next()? {
        quote @ ('"' | '\'') => Some(chars.take_while(|c| *c != quote).collect()),
        _ => {
            let in_flow = before.contains(['[', '{']);
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                let comment = c == '#' && rest[..i].ends_with(char::is_whitespace);
                if comment || (in_flow && matches!(c, ',' | ']' | '}')) {
                    end = i;
                    break;
                }
            }
            Some(rest[..end].trim_end().to_owned())
        }
    }
}
