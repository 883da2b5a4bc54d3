//! Checks the test vectors in PROTOCOL.md byte for byte against the Rust codec.
//!
//! Other-language SDKs test themselves against the same block, so it must stay
//! parseable with nothing but a JSON reader: the field list is read here by a
//! small JSON-object parser rather than a library, which keeps the protocol
//! crate free of a JSON dependency.

use std::collections::{BTreeMap, BTreeSet};

use protocol::codec::{decode_supervisor_message, decode_worker_message, encode_frame};
use protocol::frame::{HEADER_LEN, MAX_FRAME_LEN, split_frame};
use protocol::message::{
    Assign, AssignData, Cancel, Cancelled, Done, Failed, Hello, Input, Welcome,
};
use protocol::{PROTOCOL_VERSION, SupervisorMessage, WorkerMessage};

const PROTOCOL_MD: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/PROTOCOL.md"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Supervisor,
    Worker,
}

#[derive(Debug)]
struct Vector {
    line: usize,
    direction: Direction,
    name: String,
    fields: Fields,
    frame: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let mut lines = PROTOCOL_MD.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, line)| *line == "```vectors")
        .expect("PROTOCOL.md has a ```vectors block");
    let mut vectors = Vec::new();
    for (at, line) in lines {
        let line_no = at + 1;
        if line.starts_with("```") {
            assert!(!vectors.is_empty(), "the vectors block is empty");
            return vectors;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        vectors.push(parse_vector(line_no, line).unwrap_or_else(|e| {
            panic!("PROTOCOL.md line {line_no}: {e}\n  {line}");
        }));
    }
    panic!("the vectors block in PROTOCOL.md is not closed");
}

/// Splits as PROTOCOL.md tells other languages to: `direction` and `name` at
/// the first two `|`, `hex` at the last, because a string field may hold `|`.
fn parse_vector(line_no: usize, line: &str) -> Result<Vector, String> {
    let (left, hex) = line.rsplit_once('|').ok_or("no `|`")?;
    let mut parts = left.splitn(3, '|');
    let (Some(direction), Some(name), Some(fields)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected `direction | name | fields | hex`".into());
    };
    let direction = match direction.trim() {
        "supervisor" => Direction::Supervisor,
        "worker" => Direction::Worker,
        other => return Err(format!("unknown direction {other:?}")),
    };
    Ok(Vector {
        line: line_no,
        direction,
        name: name.trim().to_owned(),
        fields: Fields {
            line: line_no,
            map: Json::new(fields.trim()).object()?,
        },
        frame: parse_hex(&hex.split_whitespace().collect::<String>())?,
    })
}

fn parse_hex(digits: &str) -> Result<Vec<u8>, String> {
    if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("not an even number of hex digits: {digits:?}"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(u64),
    Str(String),
}

/// The fields of one vector; each is taken exactly once, so a misspelt or
/// surplus field fails the test instead of being silently ignored.
#[derive(Debug, Clone)]
struct Fields {
    line: usize,
    map: BTreeMap<String, Value>,
}

impl Fields {
    fn take(&mut self, key: &str) -> Value {
        self.map
            .remove(key)
            .unwrap_or_else(|| panic!("line {}: missing field {key:?}", self.line))
    }

    fn u64(&mut self, key: &str) -> u64 {
        match self.take(key) {
            Value::Int(v) => v,
            other => panic!("line {}: {key} is not an integer: {other:?}", self.line),
        }
    }

    fn u32(&mut self, key: &str) -> u32 {
        let v = self.u64(key);
        u32::try_from(v).unwrap_or_else(|_| panic!("line {}: {key} = {v} is not a u32", self.line))
    }

    fn string(&mut self, key: &str) -> String {
        match self.take(key) {
            Value::Str(s) => s,
            other => panic!("line {}: {key} is not a string: {other:?}", self.line),
        }
    }

    fn bytes(&mut self, key: &str) -> Vec<u8> {
        let key = format!("{key}_hex");
        let digits = self.string(&key);
        parse_hex(&digits).unwrap_or_else(|e| panic!("line {}: {key}: {e}", self.line))
    }

    fn finish(self) {
        assert!(
            self.map.is_empty(),
            "line {}: unexpected fields {:?}",
            self.line,
            self.map.keys().collect::<Vec<_>>()
        );
    }
}

/// A JSON reader for exactly what the vectors use: one flat object whose
/// members are non-negative integers or strings. Integers are read as `u64`
/// directly, since `u64::MAX` does not survive a trip through `f64`.
struct Json<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Json<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: char) -> Result<(), String> {
        match self.bump() {
            Some(c) if c == want => Ok(()),
            other => Err(format!(
                "expected {want:?} at {}, found {other:?}",
                self.pos
            )),
        }
    }

    fn object(mut self) -> Result<BTreeMap<String, Value>, String> {
        let mut map = BTreeMap::new();
        self.skip_ws();
        self.expect('{')?;
        self.skip_ws();
        if self.peek() == Some('}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let key = self.string()?;
                self.skip_ws();
                self.expect(':')?;
                self.skip_ws();
                let value = self.value()?;
                if map.insert(key.clone(), value).is_some() {
                    return Err(format!("duplicate field {key:?}"));
                }
                self.skip_ws();
                match self.bump() {
                    Some(',') => continue,
                    Some('}') => break,
                    other => return Err(format!("expected ',' or '}}', found {other:?}")),
                }
            }
        }
        self.skip_ws();
        if self.pos != self.text.len() {
            return Err(format!(
                "text after the object: {:?}",
                &self.text[self.pos..]
            ));
        }
        Ok(map)
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.peek() {
            Some('"') => self.string().map(Value::Str),
            Some('0'..='9') => {
                let start = self.pos;
                while matches!(self.peek(), Some('0'..='9')) {
                    self.pos += 1;
                }
                let digits = &self.text[start..self.pos];
                if digits.len() > 1 && digits.starts_with('0') {
                    return Err(format!("leading zero in {digits}"));
                }
                if matches!(self.peek(), Some('.' | 'e' | 'E')) {
                    return Err(format!("{digits}: only integers are expected"));
                }
                digits
                    .parse()
                    .map(Value::Int)
                    .map_err(|e| format!("{digits}: {e}"))
            }
            other => Err(format!("expected a string or an integer, found {other:?}")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump().ok_or("unterminated string")? {
                '"' => return Ok(out),
                '\\' => out.push(self.escape()?),
                c if u32::from(c) < 0x20 => {
                    return Err(format!("unescaped control character {c:?}"));
                }
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, String> {
        Ok(match self.bump().ok_or("unterminated escape")? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let first = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&first) {
                    self.expect('\\')?;
                    self.expect('u')?;
                    let second = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&second) {
                        return Err(format!("\\u{first:04x} is not followed by a low surrogate"));
                    }
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                } else {
                    first
                };
                char::from_u32(code).ok_or_else(|| format!("\\u{code:04x} is not a character"))?
            }
            other => return Err(format!("unknown escape \\{other}")),
        })
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or("a \\u escape needs four hex digits")?;
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|e| format!("\\u{digits}: {e}"))
    }
}

fn supervisor_message(name: &str, mut f: Fields) -> SupervisorMessage {
    let message = match name {
        "Welcome" => SupervisorMessage::Welcome(Welcome {
            protocol_version: f.u32("protocol_version"),
            worker_id: f.u32("worker_id"),
            params: f.string("params"),
            input: match f.string("input").as_str() {
                "Range" => Input::Range,
                "File" => Input::File {
                    path: f.string("input_path"),
                },
                "Lines" => Input::Lines {
                    path: f.string("input_path"),
                },
                "Stdin" => Input::Stdin,
                other => panic!("line {}: no input {other:?}", f.line),
            },
        }),
        "Assign" => SupervisorMessage::Assign(Assign {
            index: f.u64("index"),
            start: f.u64("start"),
            end: f.u64("end"),
            attempt: f.u32("attempt"),
            first_item: f.u64("first_item"),
        }),
        "Cancel" => SupervisorMessage::Cancel(Cancel {
            index: f.u64("index"),
        }),
        "Stop" => SupervisorMessage::Stop,
        "AssignData" => SupervisorMessage::AssignData(AssignData {
            index: f.u64("index"),
            start: f.u64("start"),
            end: f.u64("end"),
            attempt: f.u32("attempt"),
            first_item: f.u64("first_item"),
            data: f.bytes("data"),
        }),
        other => panic!("line {}: no supervisor message {other:?}", f.line),
    };
    f.finish();
    message
}

/// The byte and string fields a [`WorkerMessage`] borrows.
#[derive(Default)]
struct Owned {
    output: Vec<u8>,
    error: String,
}

fn worker_message<'a>(name: &str, mut f: Fields, owned: &'a mut Owned) -> WorkerMessage<'a> {
    let message = match name {
        "Hello" => WorkerMessage::Hello(Hello {
            protocol_version: f.u32("protocol_version"),
            pid: f.u32("pid"),
        }),
        "Done" => {
            let index = f.u64("index");
            let elapsed_ns = f.u64("elapsed_ns");
            owned.output = f.bytes("output");
            WorkerMessage::Done(Done {
                index,
                elapsed_ns,
                output: &owned.output,
            })
        }
        "Failed" => {
            let index = f.u64("index");
            owned.error = f.string("error");
            WorkerMessage::Failed(Failed {
                index,
                error: &owned.error,
            })
        }
        "Cancelled" => WorkerMessage::Cancelled(Cancelled {
            index: f.u64("index"),
        }),
        other => panic!("line {}: no worker message {other:?}", f.line),
    };
    f.finish();
    message
}

// No wildcard arms: a new variant does not compile until it is named here, and
// `every_variant_has_a_vector` then fails until PROTOCOL.md has a vector for it.
fn supervisor_name(message: &SupervisorMessage) -> &'static str {
    match message {
        SupervisorMessage::Welcome(_) => "Welcome",
        SupervisorMessage::Assign(_) => "Assign",
        SupervisorMessage::Cancel(_) => "Cancel",
        SupervisorMessage::Stop => "Stop",
        SupervisorMessage::AssignData(_) => "AssignData",
    }
}

fn worker_name(message: &WorkerMessage<'_>) -> &'static str {
    match message {
        WorkerMessage::Hello(_) => "Hello",
        WorkerMessage::Done(_) => "Done",
        WorkerMessage::Failed(_) => "Failed",
        WorkerMessage::Cancelled(_) => "Cancelled",
    }
}

fn encode<M: serde::Serialize>(message: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(message, &mut out).unwrap();
    out
}

/// The payload of a whole frame, checked to be exactly one frame.
fn payload(v: &Vector) -> &[u8] {
    let (range, total) = split_frame(&v.frame, MAX_FRAME_LEN)
        .unwrap()
        .unwrap_or_else(|| panic!("line {}: the frame is incomplete", v.line));
    assert_eq!(
        total,
        v.frame.len(),
        "line {}: bytes after the frame",
        v.line
    );
    &v.frame[range]
}

#[test]
fn every_vector_encodes_to_its_bytes_and_decodes_back() {
    for v in vectors() {
        let fields = v.fields.clone();
        let (encoded, name) = match v.direction {
            Direction::Supervisor => {
                let message = supervisor_message(&v.name, fields);
                let decoded = decode_supervisor_message(payload(&v))
                    .unwrap_or_else(|e| panic!("line {}: {e}", v.line));
                assert_eq!(decoded, message, "line {}: decoded", v.line);
                (encode(&message), supervisor_name(&decoded))
            }
            Direction::Worker => {
                let mut owned = Owned::default();
                let message = worker_message(&v.name, fields, &mut owned);
                let decoded = decode_worker_message(payload(&v))
                    .unwrap_or_else(|e| panic!("line {}: {e}", v.line));
                assert_eq!(decoded, message, "line {}: decoded", v.line);
                (encode(&message), worker_name(&decoded))
            }
        };
        assert_eq!(name, v.name, "line {}", v.line);
        assert_eq!(
            to_hex(&encoded),
            to_hex(&v.frame),
            "line {}: the Rust encoder (left) disagrees with PROTOCOL.md (right)",
            v.line
        );
    }
}

/// The variants of `T` in declaration order, which is their wire index, as
/// serde's derive lists them.
fn variant_names<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Deserializer, Visitor, value::Error};

    struct Probe<'p>(&'p mut Option<&'static [&'static str]>);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(de::Error::custom("not an enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = Some(variants);
            Err(de::Error::custom("only the variant names were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }

    let mut names = None;
    let _ = T::deserialize(Probe(&mut names));
    names.expect("an enum")
}

#[test]
fn every_variant_has_a_vector_and_its_wire_index_is_its_position() {
    let vectors = vectors();
    for (direction, variants) in [
        (Direction::Supervisor, variant_names::<SupervisorMessage>()),
        (Direction::Worker, variant_names::<WorkerMessage<'_>>()),
    ] {
        let mut seen = BTreeSet::new();
        for v in vectors.iter().filter(|v| v.direction == direction) {
            let name = match direction {
                Direction::Supervisor => {
                    supervisor_name(&decode_supervisor_message(payload(v)).unwrap())
                }
                Direction::Worker => worker_name(&decode_worker_message(payload(v)).unwrap()),
            };
            let index = u32::from_le_bytes(payload(v)[..4].try_into().unwrap());
            assert_eq!(
                variants.get(index as usize),
                Some(&name),
                "line {}: variant index {index}",
                v.line
            );
            seen.insert(name);
        }
        let missing: Vec<_> = variants.iter().filter(|n| !seen.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "PROTOCOL.md has no {direction:?} vector for {missing:?}"
        );
    }
}

#[test]
fn the_hello_layout_never_changes() {
    // Independent of PROTOCOL_VERSION on purpose: a supervisor of any version
    // must be able to read the version out of any worker's first frame.
    let hello = WorkerMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION.wrapping_add(1),
        pid: 0x0403_0201,
    });
    let mut expected = vec![12, 0, 0, 0, 0, 0, 0, 0];
    expected.extend_from_slice(&PROTOCOL_VERSION.wrapping_add(1).to_le_bytes());
    expected.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(encode(&hello), expected);
    assert_eq!(expected.len(), HEADER_LEN + 12);
}

#[test]
fn the_json_reader_accepts_what_python_writes_and_rejects_the_rest() {
    let map =
        Json::new(r#" { "a" : 18446744073709551615 , "b": "x\"\\\/\n\u00e9\ud83d\ude00|" } "#)
            .object()
            .unwrap();
    assert_eq!(map["a"], Value::Int(u64::MAX));
    assert_eq!(map["b"], Value::Str("x\"\\/\né😀|".into()));
    for bad in [
        "",
        "{",
        r#"{"a": 1,}"#,
        r#"{"a": 01}"#,
        r#"{"a": -1}"#,
        r#"{"a": 1.5}"#,
        r#"{"a": 18446744073709551616}"#,
        r#"{"a": 1, "a": 2}"#,
        r#"{"a": "\ud83d"}"#,
        r#"{"a": "\q"}"#,
        r#"{"a": "\u+123"}"#,
        "{\"a\": \"\n\"}",
        r#"{} x"#,
    ] {
        assert!(Json::new(bad).object().is_err(), "accepted {bad:?}");
    }
}
