//! The cutting of standard input into blocks, alone (every way the reads
//! may fall, proptested) and on its thread over real pipes.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// A safety net against a stuck test, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// Every block `input` is cut into when it arrives in `reads`, in order.
fn cut_in_reads(cutting: Cutting, input: &[u8], reads: &[usize]) -> Vec<(ChunkSpec, Carried)> {
    let mut blocks = Blocks::new(cutting);
    let mut out = Vec::new();
    let mut emit = |chunk, carried| {
        out.push((chunk, carried));
        true
    };
    let mut at = 0;
    let mut sizes = reads.iter().copied().cycle();
    while at < input.len() {
        let n = sizes
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - at);
        blocks.block.extend_from_slice(&input[at..at + n]);
        at += n;
        assert!(blocks.cut(&mut emit));
    }
    assert!(blocks.finish(&mut emit));
    out
}

fn bytes_of(carried: &Carried) -> &[u8] {
    match carried {
        Carried::Bytes(bytes) => bytes,
        Carried::TooLarge { len } => panic!("a block of {len} bytes was dropped"),
    }
}

/// Checks what every cutting must be: blocks that tile the input in order,
/// none empty, each but the last at least `chunk` long and ending with the
/// delimiter's first occurrence that ends at or after `chunk`.
fn check_tiling(input: &[u8], delimiter: &[u8], chunk: usize, blocks: &[(ChunkSpec, Carried)]) {
    let mut at = 0;
    for (n, (spec, carried)) in blocks.iter().enumerate() {
        let bytes = bytes_of(carried);
        assert_eq!(spec.index, n as u64);
        assert_eq!(
            (spec.start, spec.end),
            (at as u64, (at + bytes.len()) as u64)
        );
        assert_eq!(spec.first_item, spec.start);
        assert!(!bytes.is_empty(), "block {n} is empty");
        assert_eq!(bytes, &input[at..at + bytes.len()]);
        at += bytes.len();
        if n + 1 < blocks.len() {
            assert!(bytes.len() >= chunk, "block {n} is short");
            assert!(bytes.ends_with(delimiter), "block {n} ends mid-record");
            let d = delimiter.len();
            let earlier = (chunk.max(d)..bytes.len()).any(|end| &bytes[end - d..end] == delimiter);
            assert!(!earlier, "block {n} runs past an earlier cut");
        }
    }
    assert_eq!(at, input.len());
}

#[test]
fn blocks_end_just_after_the_first_delimiter_past_a_chunk() {
    let input = b"aa\nbbbb\nc\ndddddddddd\ne";
    let blocks = cut_in_reads(Cutting::new(b"\n".to_vec(), 4), input, &[100]);
    let texts: Vec<&[u8]> = blocks.iter().map(|(_, c)| bytes_of(c)).collect();
    assert_eq!(texts, [&b"aa\nbbbb\n"[..], b"c\ndddddddddd\n", b"e"]);
    check_tiling(input, b"\n", 4, &blocks);
}

#[test]
fn a_record_longer_than_a_chunk_is_one_larger_block_and_no_block_is_empty() {
    let input = b"xxxxxxxxxxxxxxxxxxxx\n\n\nyy\n";
    let blocks = cut_in_reads(Cutting::new(b"\n".to_vec(), 3), input, &[1, 2, 7]);
    let texts: Vec<&[u8]> = blocks.iter().map(|(_, c)| bytes_of(c)).collect();
    assert_eq!(texts, [&b"xxxxxxxxxxxxxxxxxxxx\n"[..], b"\n\nyy\n"]);
    check_tiling(input, b"\n", 3, &blocks);
    assert!(cut_in_reads(Cutting::new(b"\n".to_vec(), 3), b"", &[1]).is_empty());
}

#[test]
fn a_delimiter_split_between_two_reads_is_found() {
    let input = b"ab--cd--ef--gh";
    for read in 1..input.len() {
        let blocks = cut_in_reads(Cutting::new(b"--".to_vec(), 5), input, &[read]);
        let texts: Vec<&[u8]> = blocks.iter().map(|(_, c)| bytes_of(c)).collect();
        assert_eq!(texts, [&b"ab--cd--"[..], b"ef--gh"], "reads of {read}");
    }
}

#[test]
fn a_block_too_large_for_a_frame_is_dropped_and_counted_and_the_rest_goes_on() {
    let mut input = b"ok\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 10_000));
    input.extend_from_slice(b"\nfine\nagain\n");
    input.extend(std::iter::repeat_n(b'y', 300));
    let cutting = || Cutting::new(b"\n".to_vec(), 2).with_max_block(100);
    for read in [1, 7, 64, 4096] {
        let mut blocks = Blocks::new(cutting());
        let mut out = Vec::new();
        for piece in input.chunks(read) {
            blocks.block.extend_from_slice(piece);
            assert!(blocks.cut(&mut |chunk, carried| {
                out.push((chunk, carried));
                true
            }));
            // Only the block being read is held, and it stays small.
            assert!(
                blocks.block.len() <= 100 + read,
                "{} bytes held",
                blocks.block.len()
            );
        }
        assert!(blocks.finish(&mut |chunk, carried| {
            out.push((chunk, carried));
            true
        }));
        let got: Vec<(u64, u64, Carried)> =
            out.into_iter().map(|(s, c)| (s.start, s.end, c)).collect();
        assert_eq!(
            got,
            [
                (0, 3, Carried::Bytes(b"ok\n".to_vec())),
                (3, 10_004, Carried::TooLarge { len: 10_001 }),
                (10_004, 10_009, Carried::Bytes(b"fine\n".to_vec())),
                (10_009, 10_015, Carried::Bytes(b"again\n".to_vec())),
                (10_015, 10_315, Carried::TooLarge { len: 300 }),
            ],
            "reads of {read}"
        );
    }
}

proptest! {
    #[test]
    fn any_cutting_tiles_the_input(
        records in prop::collection::vec((0usize..40, any::<bool>()), 0..60),
        delimiter in prop_oneof![Just(b"\n".to_vec()), Just(b"\r\n".to_vec()), Just(b"|;".to_vec())],
        chunk in 1usize..90,
        reads in prop::collection::vec(1usize..50, 1..5),
    ) {
        let mut input = Vec::new();
        for (len, ends) in &records {
            input.extend(std::iter::repeat_n(b'r', *len));
            if *ends {
                input.extend_from_slice(&delimiter);
            }
        }
        let blocks = cut_in_reads(Cutting::new(delimiter.clone(), chunk as u64), &input, &reads);
        check_tiling(&input, &delimiter, chunk, &blocks);
        let whole = cut_in_reads(Cutting::new(delimiter.clone(), chunk as u64), &input, &[input.len().max(1)]);
        prop_assert_eq!(blocks, whole);
    }
}

/// Takes every chunk of `source`, waiting for word whenever none is ready.
fn drain(source: &mut StdinChunks) -> Vec<(ChunkSpec, Carried)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ready = source.ready();
    let mut chunks = Vec::new();
    loop {
        match source.next_chunk() {
            Next::Chunk(chunk) => chunks.push((chunk, source.take_carried().unwrap())),
            Next::End => return chunks,
            Next::Later => runtime.block_on(async {
                tokio::time::timeout(PATIENCE, ready.notified())
                    .await
                    .expect("the reader says when it has more");
            }),
        }
    }
}

#[test]
fn a_pipe_is_read_to_its_end_and_the_count_known_then() {
    let (reader, mut writer) = io::pipe().unwrap();
    let input: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let mut source = StdinChunks::start(reader.into(), Cutting::new(b"\n".to_vec(), 1000)).unwrap();
    assert!(source.carries());
    assert_eq!(source.total(), None);
    let writing = std::thread::spawn({
        let input = input.clone();
        move || writer.write_all(&input).unwrap()
    });
    let chunks = drain(&mut source);
    writing.join().unwrap();
    check_tiling(&input, b"\n", 1000, &chunks);
    assert_eq!(source.total(), Some(chunks.len() as u64));
    assert_eq!(source.error(), None);
}

#[test]
fn stopping_ends_a_thread_waiting_for_input_that_never_comes() {
    let (reader, writer) = io::pipe().unwrap();
    let mut source = StdinChunks::start(reader.into(), Cutting::new(b"\n".to_vec(), 10)).unwrap();
    assert_eq!(source.next_chunk(), Next::Later);
    source.stop();
    assert_eq!(source.next_chunk(), Next::End);
    // Drop joins the thread; the test ends only if it does, with the
    // writer still open.
    drop(source);
    drop(writer);
}

#[test]
fn reading_stops_while_nobody_takes_the_blocks() {
    let (reader, mut writer) = io::pipe().unwrap();
    let chunk = 64 << 10;
    let source = StdinChunks::start(reader.into(), Cutting::new(b"\n".to_vec(), chunk)).unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let writing = std::thread::spawn({
        let written = Arc::clone(&written);
        move || {
            let line = [b'z'; 1023]
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<u8>>();
            // Ends when the reader is gone and the pipe breaks.
            while writer.write_all(&line).is_ok() {
                written.fetch_add(line.len() as u64, Ordering::Relaxed);
            }
        }
    });
    // What may be in flight: the blocks queued, the one being read, one
    // read past it, and what the pipe itself holds.
    let bound = (AHEAD as u64 + 2) * (chunk + 1024) + MAX_READ as u64 + (1 << 20);
    let deadline = Instant::now() + PATIENCE;
    while written.load(Ordering::Relaxed) < AHEAD as u64 * chunk {
        assert!(Instant::now() < deadline, "the reader read nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Give a reader that ignored the bound every chance to show it.
    std::thread::sleep(Duration::from_millis(300));
    let seen = written.load(Ordering::Relaxed);
    assert!(
        seen <= bound,
        "{seen} bytes taken in with nobody taking blocks (bound {bound})"
    );
    drop(source);
    writing.join().unwrap();
}
