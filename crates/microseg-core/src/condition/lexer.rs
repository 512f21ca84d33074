//! Tokens of the condition language, each with its byte span in the input.

use std::ops::Range;

/// A token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A name or keyword: letters, digits, `_` and `.`, not starting with a digit.
    Ident(String),
    /// A number without sign: integer text or float text.
    Number(String),
    /// A double-quoted string, unescaped.
    Str(String),
    /// A back-quoted name (never a keyword): `` `first` ``.
    QuotedName(String),
    /// `@` followed by a date or date-time.
    Time(String),
    /// A duration: digits and a unit `s m h d w`, in milliseconds.
    Duration(i64),
    /// Punctuation and operators.
    Sym(&'static str),
}

/// A lexing failure: where, and what was found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LexError {
    pub at: usize,
    pub found: String,
    pub expected: &'static str,
}

const SYMBOLS: [&str; 13] = [
    "!=", "<=", ">=", "=", "<", ">", "(", ")", ",", "+", "-", "*", "/",
];

/// Splits `input` into tokens with spans. `#` starts a comment to the end of the line.
pub(crate) fn lex(input: &str) -> Result<Vec<(Tok, Range<usize>)>, LexError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'"' {
            let (text, end) = string(input, i)?;
            out.push((Tok::Str(text), start..end));
            i = end;
            continue;
        }
        if c == b'@' {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || matches!(bytes[i], b'-' | b':' | b'.' | b'+'))
            {
                i += 1;
            }
            out.push((Tok::Time(input[start + 1..i].to_string()), start..i));
            continue;
        }
        if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let int_end = i;
            // A duration: digits directly followed by a unit and no more letters.
            if let Some(&unit) = bytes.get(i) {
                let unit_ms = crate::time::unit_ms(unit);
                let next_is_word = bytes
                    .get(i + 1)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
                if let (Some(unit_ms), false) = (unit_ms, next_is_word) {
                    let n: i64 = input[start..int_end].parse().map_err(|_| LexError {
                        at: start,
                        found: input[start..=i].to_string(),
                        expected: "a duration that fits in 64 bits",
                    })?;
                    let ms = n.checked_mul(unit_ms).ok_or(LexError {
                        at: start,
                        found: input[start..=i].to_string(),
                        expected: "a duration that fits in 64 bits",
                    })?;
                    i += 1;
                    out.push((Tok::Duration(ms), start..i));
                    continue;
                }
            }
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(bytes.get(i), Some(b'e' | b'E')) {
                let mut j = i + 1;
                if matches!(bytes.get(j), Some(b'+' | b'-')) {
                    j += 1;
                }
                if bytes.get(j).is_some_and(u8::is_ascii_digit) {
                    while j < bytes.len() && bytes[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                }
            }
            if bytes
                .get(i)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            {
                let mut end = i;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                return Err(LexError {
                    at: start,
                    found: input[start..end].to_string(),
                    expected: "a number or a duration (30m, 12h, 7d, 4w)",
                });
            }
            out.push((Tok::Number(input[start..i].to_string()), start..i));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
            out.push((Tok::Ident(input[start..i].to_string()), start..i));
            continue;
        }
        if c == b'`' {
            let end = input[i + 1..].find('`').ok_or(LexError {
                at: start,
                found: input[start..].chars().take(20).collect(),
                expected: "a closing `",
            })?;
            let name = &input[i + 1..i + 1 + end];
            if name.is_empty() {
                return Err(LexError {
                    at: start,
                    found: "``".into(),
                    expected: "a name between back quotes",
                });
            }
            i += end + 2;
            out.push((Tok::QuotedName(name.to_string()), start..i));
            continue;
        }
        if let Some(sym) = SYMBOLS.iter().find(|s| input[i..].starts_with(**s)) {
            i += sym.len();
            out.push((Tok::Sym(sym), start..i));
            continue;
        }
        let ch = input[i..].chars().next().unwrap_or('?');
        return Err(LexError {
            at: start,
            found: ch.to_string(),
            expected: "a name, a value, an operator or a parenthesis",
        });
    }
    Ok(out)
}

/// A string literal starting at `start` (the opening quote): its text and the end offset.
fn string(input: &str, start: usize) -> Result<(String, usize), LexError> {
    let mut text = String::new();
    let mut chars = input[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '"' => return Ok((text, start + 1 + off + 1)),
            '\\' => match chars.next() {
                Some((_, '"')) => text.push('"'),
                Some((_, '\\')) => text.push('\\'),
                Some((_, 'n')) => text.push('\n'),
                Some((_, 't')) => text.push('\t'),
                Some((_, 'r')) => text.push('\r'),
                Some((_, 'u')) => {
                    let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                    let ch = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or(LexError {
                            at: start + 1 + off,
                            found: format!("\\u{hex}"),
                            expected: "\\u followed by 4 hex digits",
                        })?;
                    text.push(ch);
                }
                Some((o, other)) => {
                    return Err(LexError {
                        at: start + 1 + o - 1,
                        found: format!("\\{other}"),
                        expected: "an escape: \\\" \\\\ \\n \\t \\r \\uXXXX",
                    })
                }
                None => break,
            },
            c => text.push(c),
        }
    }
    Err(LexError {
        at: start,
        found: input[start..].chars().take(20).collect(),
        expected: "a closing \"",
    })
}
