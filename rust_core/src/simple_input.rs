//! The fast path of input validation: a predict body that is exactly `{"input": [numbers]}`.
//!
//! Most predict requests have this shape. For them the query frontend skips building a Python
//! dict, list and floats: [`encode_simple_input`] turns the body straight into the RPC element
//! bytes. Any other body (another key, escapes in the key, an invalid or out-of-range number, a
//! string or bytes app, malformed JSON) gives `None`, and the full validator in `_core/inputs.pxi`
//! handles it, with its error messages. Both must encode an accepted input to the same bytes,
//! which `tests/test_simple_input.py` checks on random bodies.

use crate::rpc::InputType;

/// The little-endian element bytes of `body` if it is exactly `{"input": [numbers]}` with numbers
/// valid for `input_type` (integers: 32-bit integer literals; floats and doubles: any finite
/// number, integer literals included, floats within the 32-bit range), else `None`.
pub fn encode_simple_input(body: &[u8], input_type: InputType) -> Option<Vec<u8>> {
    if !matches!(input_type, InputType::Ints | InputType::Floats | InputType::Doubles) {
        return None;
    }
    let mut p = Cursor { bytes: body, at: 0 };
    p.expect(b'{')?;
    p.expect_key(b"\"input\"")?;
    p.expect(b':')?;
    p.expect(b'[')?;
    let mut out = Vec::with_capacity(8 * 8);
    if p.peek() == Some(b']') {
        p.at += 1;
    } else {
        loop {
            let number = p.number()?;
            push(&mut out, number, input_type)?;
            match p.next_token()? {
                b',' => continue,
                b']' => break,
                _ => return None,
            }
        }
    }
    p.expect(b'}')?;
    p.skip_whitespace();
    (p.at == body.len()).then_some(out)
}

fn push(out: &mut Vec<u8>, number: Number, input_type: InputType) -> Option<()> {
    match (input_type, number) {
        (InputType::Ints, Number::Integer(i)) => out.extend_from_slice(&i32::try_from(i).ok()?.to_le_bytes()),
        (InputType::Ints, Number::Real(_)) => return None,
        (_, number) => {
            // An integer literal is an exact integer first (so "-0" is +0.0, as in Python).
            let d = match number {
                Number::Integer(i) => i as f64,
                Number::Real(d) => d,
            };
            if input_type == InputType::Doubles {
                out.extend_from_slice(&d.to_le_bytes());
            } else {
                if d.abs() > f64::from(f32::MAX) {
                    return None;
                }
                out.extend_from_slice(&(d as f32).to_le_bytes());
            }
        }
    }
    Some(())
}

#[derive(Clone, Copy)]
enum Number {
    Integer(i64),
    Real(f64),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn skip_whitespace(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    fn next_token(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next_token()? == b).then_some(())
    }

    fn expect_key(&mut self, key: &[u8]) -> Option<()> {
        self.skip_whitespace();
        self.bytes[self.at..].starts_with(key).then(|| self.at += key.len())
    }

    /// A JSON number (RFC 8259 grammar); None for anything else, or one that is infinite as a double
    /// or an integer literal beyond 64 bits (left to the full validator).
    fn number(&mut self) -> Option<Number> {
        self.skip_whitespace();
        let start = self.at;
        let digits = |c: &mut Self| {
            let from = c.at;
            while c.bytes.get(c.at).is_some_and(u8::is_ascii_digit) {
                c.at += 1;
            }
            c.at - from
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return None;
        }
        let mut real = false;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return None;
            }
            real = true;
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return None;
            }
            real = true;
        }
        // ASCII by construction.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        if real {
            let d: f64 = text.parse().ok()?;
            return d.is_finite().then_some(Number::Real(d));
        }
        text.parse().ok().map(Number::Integer)
    }
}
