//! Tests of the journal as a whole: written, cut, damaged and read back, on
//! real files, together with the output it vouches for.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::format::{RECORD_LEN, encode_header, encode_record};
use super::*;
use crate::dispatcher::ResultMeta;
use crate::store::ResultWriter;

const CHUNKS: u64 = 64;

fn fingerprint_with(chunk: &str) -> Fingerprint {
    Fingerprint::from_fields(
        [
            ("chunk".to_owned(), chunk.to_owned()),
            ("source".to_owned(), "range".to_owned()),
            ("source.end".to_owned(), "640".to_owned()),
        ]
        .into(),
    )
}

fn fp() -> Fingerprint {
    fingerprint_with("10")
}

fn header_len() -> u64 {
    encode_header(&fp()).len() as u64
}

fn done(index: u64, offset: u64, len: u64) -> Entry {
    Entry {
        kind: EntryKind::Done,
        index,
        start: index * 10,
        end: index * 10 + 10,
        offset,
        len,
        checksum: 0,
    }
}

fn failed(index: u64) -> Entry {
    Entry {
        kind: EntryKind::Failed,
        index,
        start: index * 10,
        end: index * 10 + 10,
        offset: 0,
        len: 0,
        checksum: 0,
    }
}

/// Done entries for `indices`, laid out one after another as the output
/// writer would place them, each `len` bytes.
fn contiguous(indices: impl IntoIterator<Item = u64>, len: u64) -> Vec<Entry> {
    indices
        .into_iter()
        .enumerate()
        .map(|(i, index)| done(index, i as u64 * len, len))
        .collect()
}

/// A new journal in `dir` holding `entries`, committed and finished.
fn write_fresh(dir: &Path, entries: &[Entry]) {
    let (mut writer, recovered) = open(dir, &fp(), CHUNKS, true).unwrap();
    assert_eq!(recovered.records, 0);
    for entry in entries {
        writer.append(entry);
    }
    writer.finish(None).unwrap();
}

fn reopen(dir: &Path) -> Recovered {
    let (writer, recovered) = open(dir, &fp(), CHUNKS, false).unwrap();
    writer.finish(None).unwrap();
    recovered
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL_FILE)
}

fn journal_len(dir: &Path) -> u64 {
    std::fs::metadata(journal_path(dir)).unwrap().len()
}

fn cut_journal(dir: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(journal_path(dir))
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// What reading `entries` back must give: the latest record per index wins,
/// and the output ends after the furthest done record.
fn expected(entries: &[Entry]) -> Recovered {
    let mut done = fixedbitset::FixedBitSet::with_capacity(CHUNKS as usize);
    let mut failed = fixedbitset::FixedBitSet::with_capacity(CHUNKS as usize);
    let mut output_len = 0;
    for entry in entries {
        let i = entry.index as usize;
        match entry.kind {
            EntryKind::Done => {
                done.insert(i);
                failed.set(i, false);
                output_len = output_len.max(entry.offset + entry.len);
            }
            EntryKind::Failed => {
                failed.insert(i);
                done.set(i, false);
            }
        }
    }
    Recovered {
        done,
        failed,
        output_len,
        torn_bytes: 0,
        records: entries.len() as u64,
        damaged_at: None,
        notes: Default::default(),
        settled: None,
    }
}

#[test]
fn entries_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let mut entries = contiguous([0, 1, 2, 4], 30);
    entries.push(failed(3));
    // Failed, then done on a later run: the done record wins.
    entries.push(failed(5));
    entries.push(done(5, 120, 31));
    write_fresh(root.path(), &entries);

    let recovered = reopen(root.path());
    assert_eq!(recovered, expected(&entries));
    assert_eq!(recovered.done.ones().collect::<Vec<_>>(), [0, 1, 2, 4, 5]);
    assert_eq!(recovered.failed.ones().collect::<Vec<_>>(), [3]);
    assert_eq!(recovered.output_len, 151);
    assert_eq!(
        journal_len(root.path()),
        header_len() + 7 * RECORD_LEN as u64
    );
}

#[test]
fn an_empty_journal_reads_back_empty() {
    let root = tempfile::tempdir().unwrap();
    write_fresh(root.path(), &[]);
    let recovered = reopen(root.path());
    assert_eq!(recovered, expected(&[]));
    assert_eq!(recovered.done.len(), CHUNKS as usize);
}

#[test]
fn a_torn_last_record_is_cut_off_wherever_it_was_torn() {
    let root = tempfile::tempdir().unwrap();
    let entries = contiguous(0..4, 25);
    write_fresh(root.path(), &entries);
    let whole = std::fs::read(journal_path(root.path())).unwrap();
    let three = header_len() + 3 * RECORD_LEN as u64;
    for torn in 1..RECORD_LEN as u64 {
        std::fs::write(journal_path(root.path()), &whole[..(three + torn) as usize]).unwrap();
        let recovered = reopen(root.path());
        assert_eq!(
            recovered,
            Recovered {
                torn_bytes: torn,
                ..expected(&entries[..3])
            },
            "torn after {torn} bytes"
        );
        assert_eq!(journal_len(root.path()), three);
    }
    // Appending after the repair continues the journal cleanly.
    let (mut writer, _) = open(root.path(), &fp(), CHUNKS, false).unwrap();
    writer.append(&done(9, 75, 5));
    writer.finish(None).unwrap();
    let mut all = entries[..3].to_vec();
    all.push(done(9, 75, 5));
    assert_eq!(reopen(root.path()), expected(&all));
}

#[test]
fn a_damaged_last_record_is_cut_off() {
    let root = tempfile::tempdir().unwrap();
    let entries = contiguous(0..4, 25);
    write_fresh(root.path(), &entries);
    let whole = std::fs::read(journal_path(root.path())).unwrap();
    let last = (header_len() + 3 * RECORD_LEN as u64) as usize;
    for byte in last..whole.len() {
        let mut damaged = whole.clone();
        damaged[byte] ^= 0x40;
        std::fs::write(journal_path(root.path()), &damaged).unwrap();
        let recovered = reopen(root.path());
        assert_eq!(
            recovered,
            Recovered {
                torn_bytes: RECORD_LEN as u64,
                ..expected(&entries[..3])
            },
            "byte {byte} flipped"
        );
        assert_eq!(journal_len(root.path()), last as u64);
    }
}

#[test]
fn nothing_after_a_damaged_record_is_trusted() {
    let root = tempfile::tempdir().unwrap();
    let entries = contiguous(0..5, 25);
    write_fresh(root.path(), &entries);
    let mut bytes = std::fs::read(journal_path(root.path())).unwrap();
    let second = header_len() as usize + RECORD_LEN;
    bytes[second + 10] ^= 1;
    std::fs::write(journal_path(root.path()), &bytes).unwrap();

    let recovered = reopen(root.path());
    assert_eq!(
        recovered,
        Recovered {
            torn_bytes: 4 * RECORD_LEN as u64,
            // Damage, told apart from a write a crash cut short.
            damaged_at: Some(1),
            ..expected(&entries[..1])
        }
    );
    // The output is cut to the first record's end, so the chunks the dropped
    // records described run again rather than stay half-known.
    assert_eq!(recovered.output_len, 25);
}

#[test]
fn a_changed_job_names_each_change() {
    let root = tempfile::tempdir().unwrap();
    write_fresh(root.path(), &contiguous(0..2, 10));
    let error = open(root.path(), &fingerprint_with("20"), CHUNKS, false)
        .err()
        .unwrap();
    match &error {
        JournalError::Changed { dir, changes } => {
            assert_eq!(dir, root.path());
            assert_eq!(
                changes,
                &[("chunk".to_owned(), "10".to_owned(), "20".to_owned())]
            );
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("chunk 10 → 20"), "{message}");
    assert!(message.contains("run with --fresh"), "{message}");
    // Refusing changed nothing: the journal still resumes the old job.
    assert_eq!(reopen(root.path()).records, 2);
}

#[test]
fn fresh_discards_the_journal_and_the_failed_file() {
    let root = tempfile::tempdir().unwrap();
    write_fresh(root.path(), &[failed(1), done(2, 0, 10)]);
    std::fs::write(root.path().join(FAILED_FILE), "{\"index\":1}\n").unwrap();

    let (writer, recovered) = open(root.path(), &fingerprint_with("20"), CHUNKS, true).unwrap();
    writer.finish(None).unwrap();
    assert_eq!(recovered.records, 0);
    assert_eq!(recovered.done.count_ones(..), 0);
    assert!(!root.path().join(FAILED_FILE).exists());
    assert_eq!(
        journal_len(root.path()),
        encode_header(&fingerprint_with("20")).len() as u64
    );
    assert!(!root.path().join("journal.tmp").exists());
}

#[test]
fn a_new_journal_does_not_keep_a_stray_failed_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(FAILED_FILE), "stale\n").unwrap();
    let (writer, recovered) = open(&dir, &fp(), CHUNKS, false).unwrap();
    writer.finish(None).unwrap();
    assert_eq!(recovered, expected(&[]));
    assert!(!dir.join(FAILED_FILE).exists());
}

#[test]
fn a_resumed_journal_keeps_its_failed_file() {
    let root = tempfile::tempdir().unwrap();
    write_fresh(root.path(), &[failed(1)]);
    std::fs::write(root.path().join(FAILED_FILE), "{\"index\":1}\n").unwrap();
    assert_eq!(reopen(root.path()).failed.ones().collect::<Vec<_>>(), [1]);
    assert!(root.path().join(FAILED_FILE).exists());
}

#[test]
fn a_file_that_is_no_journal_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let cases: [(&[u8], &str); 5] = [
        (b"hello, world\n", "does not start like a journal"),
        (b"SUPJRNL\x03\x00\x00\x00\x00", "format version 3"),
        // Written before records carried their bytes' checksum.
        (b"SUPJRNL\x01\x00\x00\x00\x00", "format version 1"),
        (b"SUPJRNL\x02\xff\x00\x00\x00{}", "cut short"),
        (b"SUP", "cut short"),
    ];
    for (bytes, reason) in cases {
        std::fs::write(journal_path(root.path()), bytes).unwrap();
        let error = open(root.path(), &fp(), CHUNKS, false).err().unwrap();
        let message = error.to_string();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{message}");
        assert!(message.contains(reason), "{message}");
        assert!(message.contains("run with --fresh"), "{message}");
    }

    let mut header = encode_header(&fp());
    let last = header.len() - 1;
    header[last] ^= 1;
    std::fs::write(journal_path(root.path()), &header).unwrap();
    let error = open(root.path(), &fp(), CHUNKS, false).err().unwrap();
    assert!(error.to_string().contains("checksum"), "{error}");
}

#[test]
fn a_record_for_a_chunk_the_job_lacks_is_refused() {
    let root = tempfile::tempdir().unwrap();
    write_fresh(root.path(), &[done(CHUNKS - 1, 0, 10)]);
    let error = open(root.path(), &fp(), CHUNKS - 1, false).err().unwrap();
    assert!(matches!(error, JournalError::Corrupt { .. }));
    assert!(error.to_string().contains("chunk 63"), "{error}");
}

#[test]
fn commits_write_exactly_the_appended_records_in_order() {
    let root = tempfile::tempdir().unwrap();
    let output_path = root.path().join("out.jsonl");
    let mut output = ResultWriter::resume(&output_path, 0).unwrap();
    let (mut writer, _) = open(root.path(), &fp(), CHUNKS, true).unwrap();

    let mut appended = Vec::new();
    for group in [0..3u64, 3..5, 5..6] {
        for index in group {
            let (offset, len, checksum) = output.write(&meta(index), b"42").unwrap();
            let entry = Entry {
                checksum,
                ..done(index, offset, len)
            };
            writer.append(&entry);
            appended.push(entry);
        }
        output.flush().unwrap();
        writer.commit(output.file()).unwrap();
        assert_eq!(writer.pending(), 0);
    }
    writer.append(&failed(7));
    appended.push(failed(7));
    output.flush().unwrap();
    writer.finish(output.file()).unwrap();

    let mut expected_bytes = encode_header(&fp());
    for entry in &appended {
        let mut record = [0; RECORD_LEN];
        encode_record(entry, &mut record);
        expected_bytes.extend_from_slice(&record);
    }
    assert_eq!(
        std::fs::read(journal_path(root.path())).unwrap(),
        expected_bytes
    );
    let recovered = reopen(root.path());
    assert_eq!(
        recovered.output_len,
        std::fs::metadata(&output_path).unwrap().len()
    );
}

#[test]
fn a_commit_is_due_after_the_interval_or_when_many_wait() {
    let root = tempfile::tempdir().unwrap();
    let (mut writer, _) = open(root.path(), &fp(), CHUNKS, true).unwrap();
    let now = std::time::Instant::now();
    assert!(!writer.is_due(now + COMMIT_INTERVAL));
    assert_eq!(writer.next_due(), None);

    writer.append(&failed(1));
    let due = writer.next_due().unwrap();
    assert!(writer.is_due(due));
    assert!(!writer.is_due(due - COMMIT_INTERVAL));
    writer.commit(None).unwrap();
    assert!(!writer.is_due(due + COMMIT_INTERVAL));

    let soon = std::time::Instant::now();
    for _ in 0..COMMIT_RECORDS - 1 {
        writer.append(&failed(2));
    }
    assert!(!writer.is_due(soon));
    writer.append(&failed(2));
    assert!(writer.is_due(soon));
    writer.finish(None).unwrap();
}

#[test]
fn a_failed_write_on_the_committer_is_reported() {
    let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
        return;
    };
    let mut writer = JournalWriter::start(full, PathBuf::from("/dev/full")).unwrap();
    writer.append(&failed(1));
    // Handing over succeeds; the failure shows in a later call.
    writer.commit(None).unwrap();
    writer.append(&failed(2));
    let error = writer.finish(None).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::Io {
                action: "write the journal",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn dropping_the_writer_does_not_wait() {
    let root = tempfile::tempdir().unwrap();
    let (mut writer, _) = open(root.path(), &fp(), CHUNKS, true).unwrap();
    writer.append(&failed(1));
    writer.commit(None).unwrap();
    writer.append(&failed(2));
    drop(writer);
}

#[test]
fn a_million_appends_stay_linear() {
    const N: u64 = 1_000_000;
    let root = tempfile::tempdir().unwrap();
    let (mut writer, _) = open(root.path(), &fp(), N, true).unwrap();
    for index in 0..N {
        writer.append(&done(index, index * 20, 20));
        if writer.is_due(std::time::Instant::now()) {
            writer.commit(None).unwrap();
        }
    }
    writer.finish(None).unwrap();

    let (writer, recovered) = open(root.path(), &fp(), N, false).unwrap();
    writer.finish(None).unwrap();
    assert_eq!(recovered.records, N);
    assert_eq!(recovered.done.count_ones(..), N as usize);
    assert_eq!(recovered.output_len, N * 20);
}

fn meta(index: u64) -> ResultMeta {
    ResultMeta {
        index,
        start: index * 10,
        end: index * 10 + 10,
        attempt: 1,
        worker: 0,
        seconds: 0.5,
    }
}

#[test]
fn the_output_reports_where_each_record_lands() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("out.jsonl");
    let mut output = ResultWriter::resume(&path, 0).unwrap();
    let (offset, len, _) = output.write(&meta(0), b"1").unwrap();
    assert_eq!(offset, 0);
    let (second, second_len, _) = output.write(&meta(1), b"\xff").unwrap();
    assert_eq!(second, len);
    assert_eq!(output.position(), len + second_len);
    output.flush().unwrap();
    let text = std::fs::read(&path).unwrap();
    assert_eq!(text.len() as u64, output.position());
    assert_eq!(
        &text[..len as usize],
        br#"{"index":0,"start":0,"end":10,"attempt":1,"worker":0,"seconds":0.500000,"output":1}
"#
    );
    assert!(text[second as usize..].starts_with(br#"{"index":1,"#));
}

#[test]
fn a_resumed_output_is_cut_to_the_journal_and_continues_there() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("out.jsonl");
    let mut output = ResultWriter::resume(&path, 0).unwrap();
    let (_, first, _) = output.write(&meta(0), b"1").unwrap();
    output.write(&meta(1), b"2").unwrap();
    output.finish().unwrap();

    // The journal vouches for the first record only.
    let mut output = ResultWriter::resume(&path, first).unwrap();
    assert_eq!(output.position(), first);
    assert!(output.file().is_some());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), first);
    let (offset, len, _) = output.write(&meta(1), b"3").unwrap();
    assert_eq!(offset, first);
    output.finish().unwrap();
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(text.len() as u64, first + len);
    assert_eq!(text.lines().count(), 2);
    assert!(text.ends_with("\"output\":3}\n"), "{text}");
}

#[test]
fn an_output_shorter_than_the_journal_says_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("out.jsonl");
    std::fs::write(&path, "short\n").unwrap();
    let error = ResultWriter::resume(&path, 100).err().unwrap();
    let message = error.to_string();
    assert!(
        message.contains("shorter than the journal says"),
        "{message}"
    );
    assert!(message.contains("--fresh"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), b"short\n");

    let missing = root.path().join("missing.jsonl");
    assert!(ResultWriter::resume(&missing, 1).is_err());
    assert!(!missing.exists());
}

#[test]
fn a_failed_file_is_appended_to_after_its_last_whole_line() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join(FAILED_FILE);
    std::fs::write(&path, "{\"index\":1}\n{\"ind").unwrap();
    let failures = crate::store::FailureWriter::append_to(path.clone()).unwrap();
    failures.finish().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"index\":1}\n");

    let fresh = root.path().join("other.jsonl");
    crate::store::FailureWriter::append_to(fresh.clone())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(std::fs::read(&fresh).unwrap(), b"");
}

/// A random history: each step a chunk that finished (with a record length)
/// or failed for good.
fn history() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec((0..CHUNKS, any::<bool>(), 1..300u64), 0..40).prop_map(|steps| {
        let mut offset = 0;
        steps
            .into_iter()
            .map(|(index, ok, len)| {
                if ok {
                    let entry = done(index, offset, len);
                    offset += len;
                    entry
                } else {
                    failed(index)
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever point a crash cut the journal at, reading it back yields
    /// exactly the records that were whole, and leaves the file ready to
    /// append to.
    #[test]
    fn recovery_keeps_exactly_the_whole_records(entries in history(), cut in any::<prop::sample::Index>()) {
        let root = tempfile::tempdir().unwrap();
        write_fresh(root.path(), &entries);
        let records_bytes = entries.len() * RECORD_LEN;
        let cut = cut.index(records_bytes + 1) as u64;
        cut_journal(root.path(), header_len() + cut);

        let whole = (cut / RECORD_LEN as u64) as usize;
        let recovered = reopen(root.path());
        prop_assert_eq!(
            recovered,
            Recovered { torn_bytes: cut % RECORD_LEN as u64, ..expected(&entries[..whole]) }
        );
        prop_assert_eq!(journal_len(root.path()), header_len() + (whole * RECORD_LEN) as u64);
    }
}

#[test]
fn the_lock_and_the_journal_share_a_folder() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state");
    let lock = lock_state(&dir).unwrap();
    let (writer, _) = open(&dir, &fp(), CHUNKS, false).unwrap();
    writer.finish(None).unwrap();
    assert!(lock.path().starts_with(&dir));
    let _ = File::open(journal_path(&dir)).unwrap();
}

/// An output of three records and the journal that vouches for them.
fn write_output_and_journal(dir: &Path) -> PathBuf {
    let path = dir.join("out.jsonl");
    let mut output = ResultWriter::resume(&path, 0).unwrap();
    let (mut writer, _) = open(dir, &fp(), CHUNKS, true).unwrap();
    for index in 0..3 {
        let (offset, len, checksum) = output.write(&meta(index), b"42").unwrap();
        writer.append(&Entry {
            checksum,
            ..done(index, offset, len)
        });
    }
    output.flush().unwrap();
    writer.finish(output.file()).unwrap();
    output.finish().unwrap();
    path
}

#[test]
fn an_output_that_is_what_the_journal_recorded_passes_the_check() {
    let root = tempfile::tempdir().unwrap();
    let output = write_output_and_journal(root.path());
    let recovered = inspect(root.path(), &fp(), CHUNKS, Some(&output))
        .unwrap()
        .unwrap();
    assert_eq!(recovered.records, 3);
    // Bytes past what the journal vouches for are cut on resume, not judged.
    let mut longer = std::fs::read(&output).unwrap();
    longer.extend_from_slice(b"half a rec");
    std::fs::write(&output, longer).unwrap();
    assert!(inspect(root.path(), &fp(), CHUNKS, Some(&output)).is_ok());
}

#[test]
fn an_edited_output_is_refused_naming_the_first_chunk_that_differs() {
    let root = tempfile::tempdir().unwrap();
    let output = write_output_and_journal(root.path());
    let original = std::fs::read(&output).unwrap();
    let line = original.iter().position(|&b| b == b'\n').unwrap() as u64 + 1;
    let edits: [(&str, Vec<u8>, u64); 2] = [
        // A line inserted at the top shifts every record.
        (
            "inserted",
            [b"{\"index\":99}\n".as_slice(), &original].concat(),
            0,
        ),
        // One byte changed in the second record, the length kept.
        (
            "changed",
            {
                let mut edited = original.clone();
                edited[line as usize + 3] ^= 0x20;
                edited
            },
            1,
        ),
    ];
    for (what, bytes, chunk) in edits {
        std::fs::write(&output, bytes).unwrap();
        match inspect(root.path(), &fp(), CHUNKS, Some(&output)) {
            Err(JournalError::OutputChanged { index, .. }) => assert_eq!(index, chunk, "{what}"),
            other => panic!("{what}: expected OutputChanged, got {other:?}"),
        }
    }
}

/// A journal of a `chunk = "auto"` job: the boundaries come back.
fn auto_fp() -> Fingerprint {
    Fingerprint::from_fields(
        [
            ("chunk".to_owned(), "auto".to_owned()),
            ("source.end".to_owned(), "1000000".to_owned()),
        ]
        .into(),
    )
}

fn settled_entry(kind: EntryKind, index: u64, start: u64, end: u64, offset: u64) -> Entry {
    let done = kind == EntryKind::Done;
    Entry {
        kind,
        index,
        start,
        end,
        offset: if done { offset } else { 0 },
        len: if done { 10 } else { 0 },
        checksum: 0,
    }
}

#[test]
fn an_automatic_journal_gives_back_the_boundaries_it_settled_and_sizes_its_sets_to_them() {
    let root = tempfile::tempdir().unwrap();
    let bound = 1_000_000;
    let (mut writer, _) = open(root.path(), &auto_fp(), bound, true).unwrap();
    for entry in [
        settled_entry(EntryKind::Done, 0, 0, 1, 0),
        settled_entry(EntryKind::Done, 2, 5, 21, 10),
        settled_entry(EntryKind::Failed, 1, 1, 5, 0),
        settled_entry(EntryKind::Done, 1, 1, 5, 20),
    ] {
        writer.append(&entry);
    }
    writer.finish(None).unwrap();
    let recovered = inspect(root.path(), &auto_fp(), bound, None)
        .unwrap()
        .unwrap();
    let settled: Vec<(u64, u64, u64)> = recovered
        .settled
        .unwrap()
        .iter()
        .map(|s| (s.index, s.start, s.end))
        .collect();
    assert_eq!(settled, [(0, 0, 1), (1, 1, 5), (2, 5, 21)]);
    assert_eq!(recovered.done.ones().collect::<Vec<_>>(), [0, 1, 2]);
    // Only as long as the chunks settled, not the million the job may have.
    assert_eq!(recovered.done.len(), 3);
    assert_eq!(recovered.failed.len(), 3);
}

#[test]
fn a_chunk_recorded_again_with_other_boundaries_is_damage() {
    let root = tempfile::tempdir().unwrap();
    let (mut writer, _) = open(root.path(), &auto_fp(), 100, true).unwrap();
    writer.append(&settled_entry(EntryKind::Failed, 0, 0, 4, 0));
    writer.append(&settled_entry(EntryKind::Done, 0, 0, 5, 0));
    writer.finish(None).unwrap();
    match inspect(root.path(), &auto_fp(), 100, None) {
        Err(JournalError::Corrupt { reason, .. }) => {
            assert!(reason.contains("other boundaries [0, 5)"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
