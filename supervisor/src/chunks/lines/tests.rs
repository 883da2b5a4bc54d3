//! Tests of the lines source: the count at load, the cursor and the cuts,
//! against lines split the obvious way.

use super::super::test_files::{all, temp_file};
use super::*;
use proptest::prelude::*;

/// Lines the obvious way: split after each newline, keep a non-empty tail.
fn naive_lines(contents: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = contents.split_inclusive(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

fn count(contents: &[u8]) -> LineCount {
    count_lines(temp_file(contents).path()).unwrap()
}

#[test]
fn counting_lines() {
    assert_eq!(count(b""), LineCount { lines: 0, size: 0 });
    assert_eq!(count(b"a"), LineCount { lines: 1, size: 1 });
    assert_eq!(count(b"a\n"), LineCount { lines: 1, size: 2 });
    assert_eq!(count(b"a\nb"), LineCount { lines: 2, size: 3 });
    assert_eq!(count(b"\n\n"), LineCount { lines: 2, size: 2 });
    // Across the 1 MiB buffer's edge.
    let big = b"0123456789abcde\n".repeat(100_000);
    assert_eq!(
        count(&big),
        LineCount {
            lines: 100_000,
            size: 1_600_000
        }
    );
}

#[test]
fn an_empty_file_has_no_chunks() {
    let file = temp_file(b"");
    let count = count_lines(file.path()).unwrap();
    let mut source = LinesChunks::open(file.path(), count, 3).unwrap();
    assert_eq!(source.total(), Some(0));
    assert_eq!(source.next_chunk(), None);
    assert_eq!(source.error(), None);
}

#[test]
fn the_last_chunk_takes_the_unterminated_line() {
    let file = temp_file(b"a\nbb\nccc\nd");
    let count = count_lines(file.path()).unwrap();
    let mut source = LinesChunks::open(file.path(), count, 2).unwrap();
    let spec = |index, start, end, first_item| ChunkSpec {
        index,
        start,
        end,
        first_item,
    };
    assert_eq!(all(&mut source), [spec(0, 0, 5, 0), spec(1, 5, 10, 2)]);
    assert_eq!(source.error(), None);
}

#[test]
fn a_file_that_shrinks_after_open_is_an_error() {
    let contents = b"line\n".repeat(100);
    let file = temp_file(&contents);
    let count = count_lines(file.path()).unwrap();
    let mut source = LinesChunks::open(file.path(), count, 7).unwrap();
    file.as_file().set_len(120).unwrap();
    let chunks = all(&mut source);
    // 120 bytes hold 24 lines: three chunks of 7, then not enough.
    assert_eq!(chunks.len(), 3);
    let error = source.error().unwrap();
    assert!(error.contains("fewer than the 100 lines"), "{error}");
    assert!(
        error.contains(&file.path().display().to_string()),
        "{error}"
    );
    assert_eq!(source.next_chunk(), None);
}

#[test]
fn a_read_error_stops_the_chunks_and_names_the_path() {
    // A directory opens and fails every read (EISDIR).
    let dir = tempfile::tempdir().unwrap();
    assert!(count_lines(dir.path()).is_err());
    let count = LineCount {
        lines: 10,
        size: 100,
    };
    let mut source = LinesChunks::open(dir.path(), count, 1).unwrap();
    assert_eq!(source.next_chunk(), None);
    let error = source.error().unwrap();
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
    assert!(error.contains("directory"), "{error}");
}

#[test]
fn the_cursor_cuts_lines_as_asked_and_numbers_them() {
    let file = temp_file(b"a\nbb\nccc\nd");
    let count = count_lines(file.path()).unwrap();
    let mut cursor = LinesCursor::open(file.path(), count).unwrap();
    assert_eq!(cursor.units_to(5).unwrap(), 2);
    let (chunk, lines) = cursor.cut(0, 1, 100).unwrap();
    assert_eq!(
        (chunk.start, chunk.end, chunk.first_item, lines),
        (0, 2, 0, 1)
    );
    // Up to a limit that is a line end, whatever the size.
    let (chunk, lines) = cursor.cut(1, u64::MAX, 5).unwrap();
    assert_eq!(
        (chunk.start, chunk.end, chunk.first_item, lines),
        (2, 5, 1, 1)
    );
    assert_eq!(cursor.remaining(), 2);
    let (chunk, lines) = cursor.cut(2, 5, 100).unwrap();
    assert_eq!(
        (chunk.start, chunk.end, chunk.first_item, lines),
        (5, 10, 2, 2)
    );
    assert_eq!(cursor.remaining(), 0);
}

fn contents() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => Just(b'\n'),
        6 => proptest::sample::select(b"ab".as_slice()),
        1 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..3000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn chunks_hold_chunk_lines_each(
        contents in contents(),
        chunk in prop_oneof![1u64..20, 1u64..500],
        block in prop_oneof![Just(BLOCK_SIZE), 1usize..80],
    ) {
        let expected = naive_lines(&contents);
        let file = temp_file(&contents);
        let count = count_lines(file.path()).unwrap();
        prop_assert_eq!(count, LineCount {
            lines: expected.len() as u64,
            size: contents.len() as u64,
        });
        let mut source = LinesChunks::open(file.path(), count, chunk)
            .unwrap()
            .with_block_size(block);
        let total = source.total().unwrap();
        prop_assert_eq!(total, count.lines.div_ceil(chunk));
        let chunks = all(&mut source);
        prop_assert_eq!(source.error(), None);
        prop_assert_eq!(chunks.len() as u64, total);

        let mut expected_start = 0;
        let mut lines = Vec::new();
        for (k, c) in chunks.iter().enumerate() {
            prop_assert_eq!(c.index, k as u64);
            prop_assert_eq!(c.start, expected_start);
            prop_assert_eq!(c.first_item, k as u64 * chunk);
            expected_start = c.end;
            let held = naive_lines(&contents[c.start as usize..c.end as usize]);
            let want = if k as u64 + 1 == total {
                count.lines - k as u64 * chunk
            } else {
                chunk
            };
            prop_assert_eq!(held.len() as u64, want);
            lines.extend(held);
        }
        prop_assert_eq!(expected_start, contents.len() as u64);
        prop_assert_eq!(lines, expected);
    }

    #[test]
    fn a_block_gives_the_whole_files_chunks(
        contents in contents(),
        chunk in prop_oneof![1u64..20, 1u64..500],
        block in prop_oneof![Just(BLOCK_SIZE), 1usize..80],
        first in 0u64..40,
        len in 0u64..40,
    ) {
        let file = temp_file(&contents);
        let count = count_lines(file.path()).unwrap();
        let open = || LinesChunks::open(file.path(), count, chunk)
            .unwrap()
            .with_block_size(block);
        let whole = all(&mut open());
        let mut part = open().within(first..first + len);
        let total = part.total().unwrap();
        let got = all(&mut part);
        prop_assert_eq!(part.error(), None);
        let end = ((first + len) as usize).min(whole.len());
        let start = (first as usize).min(end);
        prop_assert_eq!(total, (end - start) as u64);
        prop_assert_eq!(got.as_slice(), &whole[start..end]);
    }
}

proptest! {
    #[test]
    fn the_cursor_tiles_the_file_in_the_sizes_asked(
        contents in contents(),
        sizes in proptest::collection::vec(1u64..20, 1..50),
        block in prop_oneof![Just(BLOCK_SIZE), 1usize..80],
    ) {
        let expected = naive_lines(&contents);
        let file = temp_file(&contents);
        let count = count_lines(file.path()).unwrap();
        let mut cursor = LinesCursor::open(file.path(), count).unwrap().with_block_size(block);
        let mut at = 0;
        let mut line = 0;
        for (index, size) in sizes.iter().cycle().enumerate() {
            if cursor.remaining() == 0 {
                break;
            }
            let (chunk, lines) = cursor.cut(index as u64, *size, u64::MAX).unwrap();
            prop_assert_eq!(chunk.start, at);
            prop_assert_eq!(chunk.first_item, line);
            prop_assert_eq!(lines, (*size).min(count.lines - line));
            let held = naive_lines(&contents[chunk.start as usize..chunk.end as usize]);
            prop_assert_eq!(held.len() as u64, lines);
            at = chunk.end;
            line += lines;
        }
        prop_assert_eq!(at, contents.len() as u64);
        prop_assert_eq!(line, expected.len() as u64);
    }
}
