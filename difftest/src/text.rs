//! The text format shared by programs and traces: quoted byte strings, AMQP field values and
//! tables, and the cursor the program parser reads them with.
//!
//! Field values carry their AMQP type letter (RabbitMQ's errata letters, as amq-protocol reads
//! them), so a rendered table says exactly what was on the wire:
//!
//! ```text
//! t(1) b(-5) B(5) s(-5) u(5) I(-5) i(5) l(-5) f(1.5) d(1.5) D(2,12345) T(123) V
//! S"long string" x"byte array" A[I(1), S"a"] F{key:I(1), "odd key":V}
//! ```
//!
//! Strings are quoted with `"`; bytes other than printable ASCII, `"` and `\` are `\xNN`.

use std::fmt::Write as _;

use amq_protocol::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString};

/// Appends `bytes` quoted: `"..."` with `\"`, `\\` and `\xNN` escapes.
pub(crate) fn quote_into(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
}

/// `bytes` quoted (see [`quote_into`]).
pub(crate) fn quote(bytes: &[u8]) -> String {
    let mut out = String::new();
    quote_into(&mut out, bytes);
    out
}

/// True when `key` can be written without quotes in a table.
fn bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Renders a field table; `map_str` rewrites long-string values (the trace uses it to replace
/// run-specific names by symbols).
pub(crate) fn render_table(
    table: &FieldTable,
    map_str: &dyn Fn(&[u8]) -> Option<String>,
) -> String {
    let mut out = String::new();
    table_into(&mut out, table, map_str, &[]);
    out
}

fn table_into(
    out: &mut String,
    table: &FieldTable,
    map_str: &dyn Fn(&[u8]) -> Option<String>,
    path: &[&str],
) {
    out.push('{');
    for (i, (k, v)) in table.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        if bare_key(k.as_str()) {
            out.push_str(k.as_str());
        } else {
            quote_into(out, k.as_str().as_bytes());
        }
        out.push(':');
        let mut sub = path.to_vec();
        sub.push(k.as_str());
        value_into(out, v, map_str, &sub);
    }
    out.push('}');
}

/// Appends `tag(value)`: a value in the form its AMQP type letter `tag` announces.
fn tagged(out: &mut String, tag: char, value: impl std::fmt::Display) {
    // Writing into a `String` cannot fail: the result carries nothing.
    let _ = write!(out, "{tag}({value})");
}

fn value_into(
    out: &mut String,
    value: &AMQPValue,
    map_str: &dyn Fn(&[u8]) -> Option<String>,
    path: &[&str],
) {
    match value {
        AMQPValue::Boolean(b) => tagged(out, 't', u8::from(*b)),
        AMQPValue::ShortShortInt(v) => tagged(out, 'b', v),
        AMQPValue::ShortShortUInt(v) => tagged(out, 'B', v),
        AMQPValue::ShortInt(v) => tagged(out, 's', v),
        AMQPValue::ShortUInt(v) => tagged(out, 'u', v),
        AMQPValue::LongInt(v) => tagged(out, 'I', v),
        AMQPValue::LongUInt(v) => tagged(out, 'i', v),
        AMQPValue::LongLongInt(v) => tagged(out, 'l', v),
        AMQPValue::Float(v) => tagged(out, 'f', format_args!("{v:?}")),
        AMQPValue::Double(v) => tagged(out, 'd', format_args!("{v:?}")),
        AMQPValue::DecimalValue(d) => tagged(out, 'D', format_args!("{},{}", d.scale, d.value)),
        AMQPValue::ShortString(s) => {
            // Never on the wire from amq-protocol's parser ('s' is read as i16); kept for
            // completeness.
            out.push_str("ss");
            quote_into(out, s.as_str().as_bytes());
        }
        AMQPValue::LongString(s) => {
            out.push('S');
            match map_str(s.as_bytes()) {
                Some(mapped) => out.push_str(&mapped),
                None => quote_into(out, s.as_bytes()),
            }
        }
        AMQPValue::FieldArray(a) => {
            out.push_str("A[");
            for (i, v) in a.as_slice().iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                value_into(out, v, map_str, path);
            }
            out.push(']');
        }
        AMQPValue::Timestamp(t) => {
            // x-death's `time` is the moment of dead-lettering: not comparable between brokers.
            if path.first() == Some(&"x-death") && path.last() == Some(&"time") {
                out.push_str("T(*)");
            } else {
                tagged(out, 'T', t);
            }
        }
        AMQPValue::FieldTable(t) => {
            out.push('F');
            table_into(out, t, map_str, path);
        }
        AMQPValue::ByteArray(b) => {
            out.push('x');
            quote_into(out, b.as_slice());
        }
        AMQPValue::Void => out.push('V'),
    }
}

/// Why a text did not parse.
#[derive(Debug, thiserror::Error)]
#[error("{what} at column {col}: {rest:?}")]
pub struct ParseError {
    what: String,
    col: usize,
    rest: String,
}

/// A cursor over one line of text.
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `s`.
    pub(crate) fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, pos: 0 }
    }

    /// An error at the current position.
    pub(crate) fn error(&self, what: impl Into<String>) -> ParseError {
        ParseError {
            what: what.into(),
            col: self.pos,
            rest: self.rest().chars().take(40).collect(),
        }
    }

    /// The text not read yet.
    pub(crate) fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// Skips spaces.
    pub(crate) fn skip_ws(&mut self) {
        while self.rest().starts_with(' ') {
            self.pos += 1;
        }
    }

    /// True at the end of the line (after spaces).
    pub(crate) fn at_end(&mut self) -> bool {
        self.skip_ws();
        self.rest().is_empty()
    }

    /// Consumes `tok` (after spaces) if it comes next.
    pub(crate) fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    /// Consumes `tok` or fails.
    pub(crate) fn expect(&mut self, tok: &str) -> Result<(), ParseError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.error(format!("expected `{tok}`")))
        }
    }

    /// Peeks at the next character (after spaces).
    pub(crate) fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.rest().chars().next()
    }

    /// A word: letters, digits, `-`, `_`, `.`, `#` (after spaces).
    pub(crate) fn word(&mut self) -> Result<&'a str, ParseError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '#')))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a word"));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    /// A number with an optional sign, as text (parsed by the caller).
    pub(crate) fn number_text(&mut self) -> Result<&'a str, ParseError> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.')))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("expected a number"));
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    /// A number of type `T`.
    pub(crate) fn number<T: std::str::FromStr>(&mut self) -> Result<T, ParseError> {
        let text = self.number_text()?;
        text.parse()
            .map_err(|_| self.error(format!("bad number {text:?}")))
    }

    /// A quoted byte string (see [`quote`]).
    pub(crate) fn quoted(&mut self) -> Result<Vec<u8>, ParseError> {
        self.expect("\"")?;
        let mut out = Vec::new();
        let bytes = self.s.as_bytes();
        loop {
            let Some(&b) = bytes.get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match b {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(&e) = bytes.get(self.pos) else {
                        return Err(self.error("unterminated escape"));
                    };
                    self.pos += 1;
                    match e {
                        b'"' | b'\\' => out.push(e),
                        b'x' => {
                            let hex = self
                                .s
                                .get(self.pos..self.pos + 2)
                                .ok_or_else(|| self.error("short \\x escape"))?;
                            let v = u8::from_str_radix(hex, 16)
                                .map_err(|_| self.error("bad \\x escape"))?;
                            out.push(v);
                            self.pos += 2;
                        }
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                _ => out.push(b),
            }
        }
    }

    /// A quoted string that must be UTF-8.
    pub(crate) fn quoted_str(&mut self) -> Result<String, ParseError> {
        let bytes = self.quoted()?;
        String::from_utf8(bytes).map_err(|_| self.error("string is not UTF-8"))
    }

    /// A field table `{k:v, ...}`.
    pub(crate) fn table(&mut self) -> Result<FieldTable, ParseError> {
        self.expect("{")?;
        let mut table = FieldTable::default();
        if self.eat("}") {
            return Ok(table);
        }
        loop {
            let key = if self.peek() == Some('"') {
                self.quoted_str()?
            } else {
                self.word()?.to_owned()
            };
            if key.len() > 255 {
                return Err(self.error("table key over 255 bytes"));
            }
            self.expect(":")?;
            let value = self.value()?;
            table.insert(key.into(), value);
            if self.eat("}") {
                return Ok(table);
            }
            self.expect(",")?;
        }
    }

    /// One field value (see the module docs).
    pub(crate) fn value(&mut self) -> Result<AMQPValue, ParseError> {
        self.skip_ws();
        let rest = self.rest();
        if rest.starts_with("ss\"") {
            self.pos += 2;
            let s = self.quoted_str()?;
            if s.len() > 255 {
                return Err(self.error("short string over 255 bytes"));
            }
            return Ok(AMQPValue::ShortString(s.into()));
        }
        let Some(tag) = rest.chars().next() else {
            return Err(self.error("expected a value"));
        };
        self.pos += tag.len_utf8();
        let v = match tag {
            'V' => AMQPValue::Void,
            'S' => AMQPValue::LongString(LongString::from(self.quoted()?)),
            'x' => AMQPValue::ByteArray(ByteArray::from(self.quoted()?)),
            'F' => AMQPValue::FieldTable(self.table()?),
            'A' => {
                self.expect("[")?;
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.value()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                AMQPValue::FieldArray(FieldArray::from(items))
            }
            'D' => {
                self.expect("(")?;
                let scale = self.number()?;
                self.expect(",")?;
                let value = self.number()?;
                self.expect(")")?;
                AMQPValue::DecimalValue(DecimalValue { scale, value })
            }
            't' | 'b' | 'B' | 's' | 'u' | 'I' | 'i' | 'l' | 'f' | 'd' | 'T' => {
                self.expect("(")?;
                let v = match tag {
                    't' => AMQPValue::Boolean(self.number::<u8>()? != 0),
                    'b' => AMQPValue::ShortShortInt(self.number()?),
                    'B' => AMQPValue::ShortShortUInt(self.number()?),
                    's' => AMQPValue::ShortInt(self.number()?),
                    'u' => AMQPValue::ShortUInt(self.number()?),
                    'I' => AMQPValue::LongInt(self.number()?),
                    'i' => AMQPValue::LongUInt(self.number()?),
                    'l' => AMQPValue::LongLongInt(self.number()?),
                    'f' => AMQPValue::Float(self.number()?),
                    'd' => AMQPValue::Double(self.number()?),
                    _ => AMQPValue::Timestamp(self.number()?),
                };
                self.expect(")")?;
                v
            }
            _ => return Err(self.error(format!("unknown value type {tag:?}"))),
        };
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &[u8]) -> Option<String> {
        None
    }

    #[test]
    fn every_value_type_round_trips_through_text() {
        let mut inner = FieldTable::default();
        inner.insert("odd key \"x\"".into(), AMQPValue::Void);
        inner.insert("n".into(), AMQPValue::LongLongInt(i64::MIN));
        let mut t = FieldTable::default();
        let values = vec![
            AMQPValue::Boolean(true),
            AMQPValue::ShortShortInt(-128),
            AMQPValue::ShortShortUInt(255),
            AMQPValue::ShortInt(-32768),
            AMQPValue::ShortUInt(65535),
            AMQPValue::LongInt(i32::MIN),
            AMQPValue::LongUInt(u32::MAX),
            AMQPValue::LongLongInt(i64::MAX),
            AMQPValue::Float(1.5e-7),
            AMQPValue::Double(-2.25e300),
            AMQPValue::Float(f32::INFINITY),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 3,
                value: 123456,
            }),
            AMQPValue::LongString(LongString::from(b"a\"b\\c\x00\xff".to_vec())),
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 254])),
            AMQPValue::Timestamp(u64::MAX),
            AMQPValue::FieldTable(inner),
            AMQPValue::Void,
        ];
        t.insert(
            "arr".into(),
            AMQPValue::FieldArray(FieldArray::from(values.clone())),
        );
        for (i, v) in values.into_iter().enumerate() {
            t.insert(format!("k{i}").into(), v);
        }
        let text = render_table(&t, &none);
        let back = Cursor::new(&text).table().expect("parses");
        assert_eq!(back, t, "{text}");
        assert_eq!(render_table(&back, &none), text);
    }

    #[test]
    fn bad_text_is_an_error_not_a_panic() {
        for bad in [
            "{",
            "{a:}",
            "{a:Q(1)}",
            "{a:I(x)}",
            "{a:S\"x}",
            "{a:S\"\\q\"}",
            "{a:A[I(1)",
        ] {
            assert!(Cursor::new(bad).table().is_err(), "{bad}");
        }
    }
}
