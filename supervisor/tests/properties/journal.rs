//! The journal reader (`journal::inspect`) against journals written here
//! byte by byte from the layout `journal/format.rs` documents: read back
//! exactly as written, cut anywhere, damaged anywhere, with its output edited,
//! or no journal at all.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use supervisor::journal::{self, Fingerprint, JOURNAL_FILE, JournalError, Recovered};

use super::config;
use super::peak::peak_alloc;

/// The job's chunk count: records name chunks below it.
const CHUNKS: u64 = 48;
/// The first bytes of a journal in the format this reader reads (version 2).
const MAGIC: &[u8; 8] = b"SUPJRNL\x02";
const RECORD_LEN: usize = 56;
const DONE: u8 = 1;
const FAILED: u8 = 2;

fn fingerprint() -> Fingerprint {
    Fingerprint::from_fields(BTreeMap::from([
        ("chunk".to_owned(), "10".to_owned()),
        ("source.end".to_owned(), "480".to_owned()),
    ]))
}

/// `MAGIC`, the fingerprint's JSON behind its u32 length, and its CRC-32.
fn header(fingerprint: &Fingerprint) -> Vec<u8> {
    let json = serde_json::to_vec(fingerprint).unwrap();
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    bytes
}

/// One chunk that ended, as a run appends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    done: bool,
    index: u64,
    offset: u64,
    len: u64,
    checksum: u32,
}

impl Written {
    fn record(&self) -> [u8; RECORD_LEN] {
        let mut bytes = [0; RECORD_LEN];
        bytes[4] = if self.done { DONE } else { FAILED };
        let fields = [
            self.index,
            self.index * 10,
            self.index * 10 + 10,
            self.offset,
            self.len,
        ];
        for (i, value) in fields.into_iter().enumerate() {
            bytes[8 + i * 8..16 + i * 8].copy_from_slice(&value.to_le_bytes());
        }
        bytes[48..52].copy_from_slice(&self.checksum.to_le_bytes());
        checksum_record(&mut bytes);
        bytes
    }
}

fn checksum_record(bytes: &mut [u8]) {
    let crc = crc32fast::hash(&bytes[4..RECORD_LEN]);
    bytes[..4].copy_from_slice(&crc.to_le_bytes());
}

/// A journal and the output it describes.
#[derive(Debug, Clone)]
struct Journal {
    bytes: Vec<u8>,
    header_len: usize,
    written: Vec<Written>,
    /// The chunks' bytes back to back, then a tail no record covers (what a
    /// run wrote after its last commit).
    output: Vec<u8>,
}

/// Chunks that end, in order: done (with a record of `len` bytes) or failed.
fn plan() -> impl Strategy<Value = Vec<(bool, u64, u64)>> {
    prop::collection::vec((prop::bool::weighted(0.8), 0..CHUNKS, 0u64..40), 0..20)
}

fn journal(plan: &[(bool, u64, u64)], seed: u8, tail: &[u8]) -> Journal {
    let mut bytes = header(&fingerprint());
    let header_len = bytes.len();
    let mut output = Vec::new();
    let mut written = Vec::new();
    for &(done, index, len) in plan {
        let entry = if done {
            let offset = output.len() as u64;
            output.extend((0..len).map(|i| seed.wrapping_add((offset + i) as u8).wrapping_mul(31)));
            Written {
                done,
                index,
                offset,
                len,
                checksum: crc32fast::hash(&output[offset as usize..]),
            }
        } else {
            Written {
                done,
                index,
                offset: 0,
                len: 0,
                checksum: 0,
            }
        };
        bytes.extend_from_slice(&entry.record());
        written.push(entry);
    }
    output.extend_from_slice(tail);
    Journal {
        bytes,
        header_len,
        written,
        output,
    }
}

fn a_journal() -> impl Strategy<Value = Journal> {
    (
        plan(),
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..30),
    )
        .prop_map(|(plan, seed, tail)| journal(&plan, seed, &tail))
}

/// What reading back the first `kept` records must give, `torn` bytes after them.
fn assert_reads_as(
    recovered: &Recovered,
    written: &[Written],
    kept: usize,
    torn: u64,
    damaged_at: Option<u64>,
) {
    let mut done = std::collections::BTreeSet::new();
    let mut failed = std::collections::BTreeSet::new();
    let mut output_len = 0;
    for w in &written[..kept] {
        let index = w.index as usize;
        if w.done {
            done.insert(index);
            failed.remove(&index);
            output_len = output_len.max(w.offset + w.len);
        } else {
            failed.insert(index);
            done.remove(&index);
        }
    }
    assert_eq!(recovered.records, kept as u64, "records kept");
    assert_eq!(recovered.torn_bytes, torn, "bytes dropped");
    assert_eq!(recovered.damaged_at, damaged_at, "damage");
    assert_eq!(recovered.output_len, output_len, "output length");
    assert_eq!(
        recovered.done.ones().collect::<Vec<_>>(),
        done.into_iter().collect::<Vec<_>>()
    );
    assert_eq!(
        recovered.failed.ones().collect::<Vec<_>>(),
        failed.into_iter().collect::<Vec<_>>()
    );
}

/// What holds of anything read back, whatever the bytes were.
fn assert_consistent(recovered: &Recovered, journal_len: usize) {
    assert_eq!(recovered.done.len(), CHUNKS as usize);
    assert_eq!(recovered.failed.len(), CHUNKS as usize);
    assert!(
        recovered.done.is_disjoint(&recovered.failed),
        "{recovered:?}"
    );
    let kept = recovered.records * RECORD_LEN as u64 + recovered.torn_bytes;
    assert!(
        kept <= journal_len as u64,
        "{recovered:?} of {journal_len} bytes"
    );
    if let Some(at) = recovered.damaged_at {
        assert_eq!(at, recovered.records, "{recovered:?}");
    }
}

thread_local! {
    /// One state folder per test thread, its files rewritten for every case.
    static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Reads `journal` back the way `check` and a resume do, with `output` as
/// the output file (`None`: no output file at all) and without looking at
/// the output. Returns both readings, each with the largest allocation it made.
fn inspect(
    journal: &[u8],
    output: Option<&[u8]>,
) -> [(Result<Option<Recovered>, JournalError>, usize); 2] {
    DIR.with(|dir| {
        let mut dir = dir.borrow_mut();
        let dir = dir.get_or_insert_with(super::scratch_dir).path();
        std::fs::write(dir.join(JOURNAL_FILE), journal).unwrap();
        let output_path = dir.join("output");
        match output {
            Some(bytes) => std::fs::write(&output_path, bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(&output_path);
            }
        }
        let fingerprint = fingerprint();
        let read = |output: Option<&Path>| {
            let (result, peak) = peak_alloc(|| journal::inspect(dir, &fingerprint, CHUNKS, output));
            // A buffered read of a MiB, and never more than the file's own
            // size for anything the file claims.
            let bound = (1 << 20) + 2 * journal.len() + 4096;
            assert!(
                peak <= bound,
                "inspecting {} bytes allocated {peak}",
                journal.len()
            );
            (result, peak)
        };
        [read(Some(&output_path)), read(None)]
    })
}

fn recovered(result: &Result<Option<Recovered>, JournalError>) -> &Recovered {
    match result {
        Ok(Some(recovered)) => recovered,
        other => panic!("expected the journal to read back, got {other:?}"),
    }
}

fn is_corrupt(result: &Result<Option<Recovered>, JournalError>) -> bool {
    matches!(result, Err(JournalError::Corrupt { .. }))
}

/// Ways to damage a journal's bytes (the reader must survive any of them).
#[derive(Debug, Clone)]
enum Damage {
    Flip(Index, u8),
    Truncate(Index),
    PutU32(Index, u32),
    PutU64(Index, u64),
    Insert(Index, Vec<u8>),
    Append(Vec<u8>),
    /// Changes a byte of a record and gives it a valid checksum again: a
    /// record no supervisor writes (an unknown kind, padding, an offset
    /// that overflows, a chunk past the job's end, a failed chunk with bytes).
    Rewrite(Index, Index, u8),
    /// The header's length field says something else.
    HeaderLength(u32),
}

fn length_like() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - 7),
        Just(1 << 40),
        Just(u64::from(u32::MAX)),
        Just(CHUNKS),
        0u64..64,
        any::<u64>(),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    let bytes = prop::collection::vec(any::<u8>(), 1..80);
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), any::<u32>()).prop_map(|(at, v)| Damage::PutU32(at, v)),
        (any::<Index>(), length_like()).prop_map(|(at, v)| Damage::PutU64(at, v)),
        (any::<Index>(), bytes.clone()).prop_map(|(at, b)| Damage::Insert(at, b)),
        bytes.prop_map(Damage::Append),
        (any::<Index>(), any::<Index>(), any::<u8>())
            .prop_map(|(record, at, value)| Damage::Rewrite(record, at, value)),
        prop_oneof![Just(u32::MAX), Just(0), any::<u32>()].prop_map(Damage::HeaderLength),
    ]
}

fn apply(journal: &Journal, bytes: &mut Vec<u8>, damage: &Damage) {
    let len = bytes.len();
    match damage {
        Damage::Flip(at, mask) if len > 0 => bytes[at.index(len)] ^= mask,
        Damage::Truncate(at) if len > 0 => bytes.truncate(at.index(len)),
        Damage::PutU32(at, value) if len > 0 => {
            let at = at.index(len);
            let n = (len - at).min(4);
            bytes[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
        }
        Damage::PutU64(at, value) if len > 0 => {
            let at = at.index(len);
            let n = (len - at).min(8);
            bytes[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
        }
        Damage::Insert(at, inserted) => {
            let at = if len > 0 { at.index(len + 1) } else { 0 };
            bytes.splice(at..at, inserted.iter().copied());
        }
        Damage::Append(appended) => bytes.extend_from_slice(appended),
        Damage::Rewrite(record, at, value) => {
            let records = len.saturating_sub(journal.header_len) / RECORD_LEN;
            if records > 0 {
                let start = journal.header_len + record.index(records) * RECORD_LEN;
                let record = &mut bytes[start..start + RECORD_LEN];
                record[4 + at.index(RECORD_LEN - 4)] = *value;
                checksum_record(record);
            }
        }
        Damage::HeaderLength(value) if len >= 12 => {
            bytes[8..12].copy_from_slice(&value.to_le_bytes());
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_journal_reads_back_as_it_was_written(journal in a_journal()) {
        for (result, _) in inspect(&journal.bytes, Some(&journal.output)) {
            assert_reads_as(recovered(&result), &journal.written, journal.written.len(), 0, None);
        }
        // No output file at all: nothing to check it against.
        let [(result, _), _] = inspect(&journal.bytes, None);
        assert_reads_as(recovered(&result), &journal.written, journal.written.len(), 0, None);
    }

    #[test]
    fn a_journal_cut_anywhere_keeps_exactly_its_whole_records(
        journal in a_journal(),
        cut in any::<Index>(),
    ) {
        let cut = cut.index(journal.bytes.len() + 1);
        for (result, _) in inspect(&journal.bytes[..cut], Some(&journal.output)) {
            if cut < journal.header_len {
                prop_assert!(is_corrupt(&result), "cut at {cut}: {result:?}");
                continue;
            }
            let kept = (cut - journal.header_len) / RECORD_LEN;
            let torn = ((cut - journal.header_len) % RECORD_LEN) as u64;
            assert_reads_as(recovered(&result), &journal.written, kept, torn, None);
        }
    }

    #[test]
    fn a_damaged_byte_loses_its_record_and_every_one_after_it(
        journal in a_journal(),
        at in any::<Index>(),
        mask in 1u8..,
    ) {
        let mut bytes = journal.bytes.clone();
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        for (result, _) in inspect(&bytes, Some(&journal.output)) {
            if at < journal.header_len {
                prop_assert!(is_corrupt(&result), "byte {at}: {result:?}");
                continue;
            }
            let damaged = (at - journal.header_len) / RECORD_LEN;
            let after = journal.written.len() - damaged - 1;
            let torn = ((after + 1) * RECORD_LEN) as u64;
            // Whole, good records after the bad one: damage, not a torn write.
            let damaged_at = (after > 0).then_some(damaged as u64);
            assert_reads_as(recovered(&result), &journal.written, damaged, torn, damaged_at);
        }
    }

    #[test]
    fn an_output_edited_under_a_finished_chunk_is_refused_naming_it(
        journal in a_journal(),
        at in any::<Index>(),
        mask in 1u8..,
    ) {
        let mut output = journal.output.clone();
        if output.is_empty() {
            // Nothing to edit: a byte past every record, which no chunk owns.
            output.push(0);
        }
        let at = at.index(output.len());
        output[at] ^= mask;
        let [(checked, _), (unchecked, _)] = inspect(&journal.bytes, Some(&output));
        let owner = journal
            .written
            .iter()
            .find(|w| w.done && w.offset <= at as u64 && (at as u64) < w.offset + w.len);
        match owner {
            Some(owner) => prop_assert!(
                matches!(checked, Err(JournalError::OutputChanged { index, .. }) if index == owner.index),
                "byte {at} of chunk {}: {checked:?}",
                owner.index
            ),
            // Past every record: what a crash left after the last commit.
            None => assert_reads_as(recovered(&checked), &journal.written, journal.written.len(), 0, None),
        }
        assert_reads_as(recovered(&unchecked), &journal.written, journal.written.len(), 0, None);
    }

    #[test]
    fn a_damaged_journal_is_refused_or_read_consistently(
        journal in a_journal(),
        damages in prop::collection::vec(damage(), 1..4),
        output_cut in any::<Index>(),
    ) {
        let mut bytes = journal.bytes.clone();
        for damage in &damages {
            apply(&journal, &mut bytes, damage);
        }
        let output = &journal.output[..output_cut.index(journal.output.len() + 1)];
        for (result, _) in inspect(&bytes, Some(output)) {
            match result {
                Ok(Some(recovered)) => assert_consistent(&recovered, bytes.len()),
                Ok(None) => panic!("a journal file was there"),
                Err(JournalError::Corrupt { .. } | JournalError::OutputChanged { .. }) => {}
                // A header damaged into another valid one names another job.
                Err(JournalError::Changed { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_refused_or_read_consistently(
        with_header in any::<bool>(),
        magic_only in any::<bool>(),
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = match (with_header, magic_only) {
            (true, false) => header(&fingerprint()),
            (true, true) => MAGIC.to_vec(),
            (false, _) => Vec::new(),
        };
        bytes.extend_from_slice(&tail);
        for (result, _) in inspect(&bytes, None) {
            match result {
                Ok(Some(recovered)) => assert_consistent(&recovered, bytes.len()),
                Ok(None) => panic!("a journal file was there"),
                Err(JournalError::Corrupt { .. } | JournalError::Changed { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn no_journal_reads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let result = journal::inspect(dir.path(), &fingerprint(), CHUNKS, None);
    assert!(matches!(result, Ok(None)), "{result:?}");
}

#[test]
fn the_layout_written_here_is_the_one_the_supervisor_reads() {
    // Two done chunks and a failed one, the second done after failing.
    let plan = [(true, 3, 5), (false, 7, 0), (true, 7, 9)];
    let journal = journal(&plan, 1, b"");
    let [(result, _), _] = inspect(&journal.bytes, Some(&journal.output));
    let recovered = recovered(&result);
    assert_eq!(recovered.done.ones().collect::<Vec<_>>(), [3, 7]);
    assert_eq!(recovered.output_len, 14);
}
