//! The journal's bytes: the header that fingerprints the job and the
//! fixed-size records, encoded and decoded without I/O.
//!
//! ```text
//! header:  "SUPJRNL\x01"  u32 LE json length  json fingerprint  u32 LE crc32(json)
//! record:  u32 LE crc32(next 52 bytes)  u8 kind (1 done, 2 failed)  3 zero bytes
//!          u64 LE index  u64 LE start  u64 LE end  u64 LE output offset  u64 LE output length
//!          u32 LE crc32(the chunk's bytes in the output)  4 zero bytes
//! ```

use std::sync::OnceLock;

use super::Fingerprint;

/// The file's first bytes; the last one is the format's version.
pub const MAGIC: &[u8; 8] = b"SUPJRNL\x02";
/// Bytes in one record.
pub const RECORD_LEN: usize = 56;

const DONE: u8 = 1;
const FAILED: u8 = 2;

/// How a chunk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Its record is in the output at `offset..offset + len`.
    Done,
    /// It failed for good; it has no bytes in the output.
    Failed,
}

/// One record of the journal: a chunk that ended, and where its output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub kind: EntryKind,
    pub index: u64,
    pub start: u64,
    pub end: u64,
    /// Where the chunk's record starts in the output; 0 when failed.
    pub offset: u64,
    /// The record's length in bytes; 0 when failed.
    pub len: u64,
    /// CRC-32 of the record's bytes in the output, so that a resume can
    /// tell the output it keeps is the one the journal describes; 0 when failed.
    pub checksum: u32,
}

/// A record that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecord {
    /// The checksum does not match: a torn or damaged write.
    Checksum,
    /// The checksum matches but the content is not something any supervisor
    /// writes: the file is not what it claims to be.
    Invalid(String),
}

/// The header for `fingerprint`.
pub fn encode_header(fingerprint: &Fingerprint) -> Vec<u8> {
    let json = serde_json::to_vec(fingerprint).expect("a fingerprint serializes");
    let len = u32::try_from(json.len()).expect("a fingerprint is far below 4 GiB");
    let mut header = Vec::with_capacity(MAGIC.len() + 8 + json.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&json);
    header.extend_from_slice(&crc32(&json).to_le_bytes());
    header
}

/// Encodes `entry`; a failed entry's offset and length are written as 0.
pub fn encode_record(entry: &Entry, out: &mut [u8; RECORD_LEN]) {
    let (kind, offset, len, checksum) = match entry.kind {
        EntryKind::Done => (DONE, entry.offset, entry.len, entry.checksum),
        EntryKind::Failed => (FAILED, 0, 0, 0),
    };
    out[4] = kind;
    out[5..8].fill(0);
    for (i, value) in [entry.index, entry.start, entry.end, offset, len]
        .into_iter()
        .enumerate()
    {
        out[8 + i * 8..16 + i * 8].copy_from_slice(&value.to_le_bytes());
    }
    out[48..52].copy_from_slice(&checksum.to_le_bytes());
    out[52..].fill(0);
    let crc = crc32(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC-32 of `bytes`, as `crc32fast::hash` gives it, from a hasher set
/// up once: `crc32fast::hash` asks the CPU for its features at every call,
/// which is a sixth of a short record's checksum, and every chunk takes two
/// (its output record's and its journal record's). Every checksum of the
/// journal and the output is this one.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut hasher = crc32_hasher();
    hasher.update(bytes);
    hasher.finalize()
}

/// A fresh CRC-32 hasher for bytes that come in pieces, set up as
/// [`crc32`]'s is.
pub fn crc32_hasher() -> crc32fast::Hasher {
    static FRESH: OnceLock<crc32fast::Hasher> = OnceLock::new();
    FRESH.get_or_init(crc32fast::Hasher::new).clone()
}

pub fn decode_record(bytes: &[u8; RECORD_LEN]) -> Result<Entry, BadRecord> {
    let crc = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if crc32(&bytes[4..]) != crc {
        return Err(BadRecord::Checksum);
    }
    let kind = match bytes[4] {
        DONE => EntryKind::Done,
        FAILED => EntryKind::Failed,
        other => return Err(BadRecord::Invalid(format!("unknown record kind {other}"))),
    };
    if bytes[5..8] != [0, 0, 0] || bytes[52..] != [0, 0, 0, 0] {
        return Err(BadRecord::Invalid("nonzero padding".to_owned()));
    }
    let field =
        |i: usize| u64::from_le_bytes(bytes[8 + i * 8..16 + i * 8].try_into().expect("8 bytes"));
    let entry = Entry {
        kind,
        index: field(0),
        start: field(1),
        end: field(2),
        offset: field(3),
        len: field(4),
        checksum: u32::from_le_bytes(bytes[48..52].try_into().expect("4 bytes")),
    };
    if entry.offset.checked_add(entry.len).is_none() {
        return Err(BadRecord::Invalid(format!(
            "output range {}+{} overflows",
            entry.offset, entry.len
        )));
    }
    if kind == EntryKind::Failed && (entry.offset, entry.len, entry.checksum) != (0, 0, 0) {
        return Err(BadRecord::Invalid(
            "a failed chunk with output bytes".to_owned(),
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(index: u64) -> Entry {
        Entry {
            kind: EntryKind::Done,
            index,
            start: index * 10,
            end: index * 10 + 10,
            offset: index * 100,
            len: 100,
            checksum: 0xDEAD_BEEF,
        }
    }

    #[test]
    fn records_round_trip() {
        let mut bytes = [0xAA; RECORD_LEN];
        for entry in [
            done(0),
            done(u64::MAX / 200),
            Entry {
                kind: EntryKind::Failed,
                index: 7,
                start: 70,
                end: 80,
                offset: 0,
                len: 0,
                checksum: 0,
            },
        ] {
            encode_record(&entry, &mut bytes);
            assert_eq!(decode_record(&bytes), Ok(entry));
        }
    }

    #[test]
    fn the_layout_is_fixed() {
        let mut bytes = [0; RECORD_LEN];
        encode_record(&done(1), &mut bytes);
        assert_eq!(bytes[4..8], [1, 0, 0, 0]);
        assert_eq!(bytes[8..16], 1u64.to_le_bytes());
        assert_eq!(bytes[16..24], 10u64.to_le_bytes());
        assert_eq!(bytes[24..32], 20u64.to_le_bytes());
        assert_eq!(bytes[32..40], 100u64.to_le_bytes());
        assert_eq!(bytes[40..48], 100u64.to_le_bytes());
        assert_eq!(bytes[48..52], 0xDEAD_BEEF_u32.to_le_bytes());
        assert_eq!(bytes[52..], [0; 4]);
        assert_eq!(bytes[..4], crc32fast::hash(&bytes[4..]).to_le_bytes());
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let mut bytes = [0; RECORD_LEN];
        encode_record(&done(3), &mut bytes);
        for bit in 0..RECORD_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                decode_record(&damaged),
                Err(BadRecord::Checksum),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn a_checksummed_record_of_an_unknown_kind_is_invalid() {
        let mut bytes = [0; RECORD_LEN];
        encode_record(&done(3), &mut bytes);
        bytes[4] = 9;
        let crc = crc32fast::hash(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_record(&bytes), Err(BadRecord::Invalid(_))));
    }

    #[test]
    fn the_header_carries_the_fingerprint() {
        let fingerprint = Fingerprint::from_fields([("chunk".into(), "10".into())].into());
        let header = encode_header(&fingerprint);
        assert_eq!(&header[..8], MAGIC);
        let len = u32::from_le_bytes(header[8..12].try_into().unwrap()) as usize;
        let json = &header[12..12 + len];
        assert_eq!(
            serde_json::from_slice::<Fingerprint>(json).unwrap(),
            fingerprint
        );
        assert_eq!(header[12 + len..], crc32fast::hash(json).to_le_bytes());
        assert_eq!(header.len(), 16 + len);
    }
}
