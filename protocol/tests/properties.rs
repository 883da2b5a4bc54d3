//! Properties of the codec and the frame reader over generated input: every
//! message round-trips, and no input, however broken, makes decoding panic or
//! reserve memory for lengths that merely appear in the bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Read;

use proptest::prelude::*;
use proptest::sample::Index;
use protocol::codec::{decode_supervisor_message, decode_worker_message, encode_frame};
use protocol::connection::{FrameBatch, FrameReader};
use protocol::frame::{HEADER_LEN, MAX_FRAME_LEN, split_frame};
use protocol::message::{
    Assign, AssignData, Cancel, Cancelled, Done, Failed, Hello, Input, Welcome,
};
use protocol::{ProtocolError, SupervisorMessage, WorkerMessage};

/// Records the largest single allocation each thread requests. Per thread
/// rather than one global maximum, so tests running in parallel do not see
/// each other's allocations.
struct PeakAlloc;

thread_local! {
    // `const` and free of `Drop`, so reading it never allocates, which would
    // recurse into the allocator.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = PEAK.try_with(|peak| peak.set(peak.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// `default` cases unless `PROPTEST_CASES` says otherwise: CI runs a few,
/// scripts/fuzz a million.
fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Runs `f` and returns the largest single allocation it requested.
fn peak_alloc<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PEAK.with(|peak| peak.set(0));
    let result = f();
    (result, PEAK.with(Cell::get))
}

const CAP: usize = MAX_FRAME_LEN as usize;

/// Enough for an error message; far below any length a peer could claim.
const SMALL: usize = 4096;

/// What a [`FrameReader`] may hold for `received` bytes: its read window
/// (64 KiB) on top of them, doubled for `Vec` growth.
fn frame_buffer_bound(received: usize) -> usize {
    2 * (received + 64 * 1024)
}

fn encode<M: serde::Serialize>(message: &M) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(message, &mut out).unwrap();
    out
}

/// A worker message with the data it borrows.
#[derive(Debug, Clone)]
enum OwnedWorker {
    Hello(Hello),
    /// index, elapsed_ns, output
    Done(u64, u64, Vec<u8>),
    Failed(u64, String),
    Cancelled(u64),
}

impl OwnedWorker {
    fn message(&self) -> WorkerMessage<'_> {
        match self {
            Self::Hello(hello) => WorkerMessage::Hello(*hello),
            Self::Done(index, elapsed_ns, output) => WorkerMessage::Done(Done {
                index: *index,
                elapsed_ns: *elapsed_ns,
                output,
            }),
            Self::Failed(index, error) => WorkerMessage::Failed(Failed {
                index: *index,
                error,
            }),
            Self::Cancelled(index) => WorkerMessage::Cancelled(Cancelled { index: *index }),
        }
    }
}

#[derive(Debug, Clone)]
enum AnyMessage {
    Supervisor(SupervisorMessage),
    Worker(OwnedWorker),
}

impl AnyMessage {
    fn frame(&self) -> Vec<u8> {
        match self {
            Self::Supervisor(m) => encode(m),
            Self::Worker(m) => encode(&m.message()),
        }
    }

    /// Decodes `payload` as a message of this one's direction and compares.
    fn assert_decodes_from(&self, payload: &[u8]) {
        match self {
            Self::Supervisor(m) => assert_eq!(&decode_supervisor_message(payload).unwrap(), m),
            Self::Worker(m) => assert_eq!(decode_worker_message(payload).unwrap(), m.message()),
        }
    }
}

fn u64_edges() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        1 => Just(0),
        1 => Just(u64::MAX),
        1 => Just(u64::from(u32::MAX)),
    ]
}

fn u32_edges() -> impl Strategy<Value = u32> {
    prop_oneof![3 => any::<u32>(), 1 => Just(0), 1 => Just(u32::MAX)]
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        Just(Input::Range),
        text(100).prop_map(|path| Input::File { path }),
        text(100).prop_map(|path| Input::Lines { path }),
        Just(Input::Stdin),
    ]
}

fn supervisor_message() -> impl Strategy<Value = SupervisorMessage> {
    prop_oneof![
        (u32_edges(), u32_edges(), text(300), input()).prop_map(
            |(protocol_version, worker_id, params, input)| {
                SupervisorMessage::Welcome(Welcome {
                    protocol_version,
                    worker_id,
                    params,
                    input,
                })
            }
        ),
        (
            u64_edges(),
            u64_edges(),
            u64_edges(),
            u32_edges(),
            u64_edges()
        )
            .prop_map(|(index, start, end, attempt, first_item)| {
                SupervisorMessage::Assign(Assign {
                    index,
                    start,
                    end,
                    attempt,
                    first_item,
                })
            }),
        u64_edges().prop_map(|index| SupervisorMessage::Cancel(Cancel { index })),
        Just(SupervisorMessage::Stop),
        (
            u64_edges(),
            u64_edges(),
            u32_edges(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(index, start, attempt, data)| {
                SupervisorMessage::AssignData(AssignData {
                    index,
                    start,
                    end: start.saturating_add(data.len() as u64),
                    attempt,
                    first_item: start,
                    data,
                })
            }),
    ]
}

fn worker_message(max_output: usize) -> impl Strategy<Value = OwnedWorker> {
    prop_oneof![
        (u32_edges(), u32_edges()).prop_map(|(protocol_version, pid)| {
            OwnedWorker::Hello(Hello {
                protocol_version,
                pid,
            })
        }),
        (
            u64_edges(),
            u64_edges(),
            prop::collection::vec(any::<u8>(), 0..max_output)
        )
            .prop_map(|(index, elapsed_ns, output)| OwnedWorker::Done(index, elapsed_ns, output)),
        (u64_edges(), text(300)).prop_map(|(index, error)| OwnedWorker::Failed(index, error)),
        u64_edges().prop_map(OwnedWorker::Cancelled),
    ]
}

fn any_message(max_output: usize) -> impl Strategy<Value = AnyMessage> {
    prop_oneof![
        supervisor_message().prop_map(AnyMessage::Supervisor),
        worker_message(max_output).prop_map(AnyMessage::Worker),
    ]
}

/// A reader that hands out its bytes in pieces of the given sizes, in turn,
/// the way a socket may.
struct Trickle<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    turn: usize,
}

impl<'a> Trickle<'a> {
    fn new(data: &'a [u8], sizes: &'a [usize]) -> Self {
        Self {
            data,
            sizes,
            turn: 0,
        }
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..2048, 1..6)
}

/// Decodes `payload` both ways. Whatever it holds, nothing panics; decoding
/// what a worker sent reserves nothing for the lengths written in it (its
/// messages borrow from the payload); decoding what the supervisor sent stays
/// under the cap; and whatever decodes re-encodes to the same bytes.
fn check_payload(payload: &[u8]) {
    let (decoded, peak) = peak_alloc(|| decode_worker_message(payload));
    assert!(
        peak <= SMALL,
        "decoding a worker message allocated {peak} bytes"
    );
    if let Ok(message) = decoded {
        assert_eq!(encode(&message)[HEADER_LEN..], *payload, "not canonical");
    }
    // A Welcome's `params` is an owned `String`, reserved at the length the
    // payload claims before the bytes are checked; the decode limit bounds it.
    let (decoded, peak) = peak_alloc(|| decode_supervisor_message(payload));
    assert!(
        peak <= CAP,
        "decoding a supervisor message allocated {peak} bytes"
    );
    if let Ok(message) = decoded {
        assert_eq!(encode(&message)[HEADER_LEN..], *payload, "not canonical");
    }
}

/// Feeds arbitrary bytes to every entry point that takes bytes from a peer.
fn check_bytes(bytes: &[u8], sizes: &[usize]) {
    check_payload(bytes);
    if let Some(payload) = bytes.get(HEADER_LEN..) {
        check_payload(payload);
    }
    if let Ok(Some((payload, total))) = split_frame(bytes, MAX_FRAME_LEN) {
        assert!(total <= bytes.len() && payload.end == total);
        check_payload(&bytes[payload]);
    }

    let mut payloads = Vec::new();
    let (_, peak) = peak_alloc(|| {
        let mut buffer = FrameReader::new();
        let mut reader = Trickle::new(bytes, sizes);
        loop {
            loop {
                match buffer.next_frame() {
                    Ok(Some(payload)) => payloads.push(payload.to_vec()),
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            match buffer.fill_from(&mut reader) {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    });
    assert!(
        peak <= frame_buffer_bound(bytes.len()),
        "the frame buffer allocated {peak} bytes for {} received",
        bytes.len()
    );
    for payload in &payloads {
        check_payload(payload);
    }
}

/// Ways to damage a valid frame.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Truncate(Index),
    SetHeader(u32),
    AddToHeader(u32),
    /// Overwrite 8 bytes (or what is left) with a length-like value, to hit
    /// the `u64` length fields.
    PutU64(Index, u64),
    Insert(Index, Vec<u8>),
    Append(Vec<u8>),
}

fn length_like() -> impl Strategy<Value = u64> {
    let cap = u64::from(MAX_FRAME_LEN);
    prop_oneof![
        Just(u64::MAX),
        Just(1 << 40),
        Just(u64::from(u32::MAX)),
        Just(cap + 1),
        Just(cap),
        Just(cap - 1),
        0u64..64,
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = prop::collection::vec(any::<u8>(), 1..16);
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        any::<Index>().prop_map(Mutation::Truncate),
        prop_oneof![Just(u32::MAX), Just(MAX_FRAME_LEN + 1), any::<u32>()]
            .prop_map(Mutation::SetHeader),
        (1u32..64).prop_map(Mutation::AddToHeader),
        (any::<Index>(), length_like()).prop_map(|(at, v)| Mutation::PutU64(at, v)),
        (any::<Index>(), bytes.clone()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        bytes.prop_map(Mutation::Append),
    ]
}

fn apply(frame: &mut Vec<u8>, mutation: &Mutation) {
    let len = frame.len();
    match mutation {
        Mutation::Flip(at, mask) if len > 0 => frame[at.index(len)] ^= mask,
        Mutation::Truncate(at) if len > 0 => frame.truncate(at.index(len)),
        Mutation::SetHeader(value) if len >= HEADER_LEN => {
            frame[..HEADER_LEN].copy_from_slice(&value.to_le_bytes());
        }
        Mutation::AddToHeader(n) if len >= HEADER_LEN => {
            let header = u32::from_le_bytes(frame[..HEADER_LEN].try_into().unwrap());
            frame[..HEADER_LEN].copy_from_slice(&header.wrapping_add(*n).to_le_bytes());
        }
        Mutation::PutU64(at, value) if len > 0 => {
            let at = at.index(len);
            let n = (len - at).min(8);
            frame[at..at + n].copy_from_slice(&value.to_le_bytes()[..n]);
        }
        Mutation::Insert(at, bytes) => {
            let at = if len > 0 { at.index(len + 1) } else { 0 };
            frame.splice(at..at, bytes.iter().copied());
        }
        Mutation::Append(bytes) => frame.extend_from_slice(bytes),
        _ => {}
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn supervisor_messages_round_trip(message in supervisor_message()) {
        let frame = encode(&message);
        let (payload, total) = split_frame(&frame, MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(total, frame.len());
        prop_assert_eq!(decode_supervisor_message(&frame[payload]).unwrap(), message);
    }

    #[test]
    fn worker_messages_round_trip(message in worker_message(4096)) {
        let frame = encode(&message.message());
        let (payload, total) = split_frame(&frame, MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(total, frame.len());
        prop_assert_eq!(decode_worker_message(&frame[payload]).unwrap(), message.message());
    }

    #[test]
    fn random_bytes_are_refused_without_panic_or_large_allocation(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        sizes in read_sizes(),
    ) {
        check_bytes(&bytes, &sizes);
    }

    #[test]
    fn damaged_frames_are_refused_without_panic_or_large_allocation(
        message in any_message(256),
        mutations in prop::collection::vec(mutation(), 1..4),
        sizes in read_sizes(),
    ) {
        let mut frame = message.frame();
        for mutation in &mutations {
            apply(&mut frame, mutation);
        }
        check_bytes(&frame, &sizes);
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn a_stream_of_frames_arrives_whole_whatever_the_read_sizes(
        messages in prop::collection::vec(any_message(1024), 1..8),
        sizes in read_sizes(),
        batched in any::<bool>(),
    ) {
        let stream: Vec<u8> = messages.iter().flat_map(AnyMessage::frame).collect();
        let mut reader = Trickle::new(&stream, &sizes);
        let mut buffer = FrameReader::new();
        let mut batch = FrameBatch::default();
        let mut expected = messages.iter();
        loop {
            if batched {
                buffer.take_frames(&mut batch).unwrap();
                for payload in batch.payloads() {
                    expected.next().expect("no more frames than sent").assert_decodes_from(payload);
                }
            } else {
                while let Some(payload) = buffer.next_frame().unwrap() {
                    expected.next().expect("no more frames than sent").assert_decodes_from(payload);
                }
            }
            if !buffer.fill_from(&mut reader).unwrap() {
                break;
            }
        }
        prop_assert!(expected.next().is_none(), "frames went missing");
    }
}

#[test]
fn the_allocation_tracker_sees_allocations() {
    let (buffer, peak) = peak_alloc(|| vec![0u8; 1 << 20]);
    assert!(peak >= buffer.len(), "{peak}");
}

fn payload_with_length(prefix: &[u8], length: u64, tail: &[u8]) -> Vec<u8> {
    let mut payload = prefix.to_vec();
    payload.extend_from_slice(&length.to_le_bytes());
    payload.extend_from_slice(tail);
    payload
}

const CLAIMS: [u64; 4] = [
    u64::MAX,
    1 << 40,
    u64::MAX / 2 + 1,
    MAX_FRAME_LEN as u64 + 1,
];

#[test]
fn a_welcome_claiming_more_params_than_the_cap_is_refused_before_allocating() {
    // Welcome { protocol_version: 1, worker_id: 0, params: <claimed length> "{}" }
    for claim in CLAIMS {
        let payload = payload_with_length(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], claim, b"{}");
        let (decoded, peak) = peak_alloc(|| decode_supervisor_message(&payload));
        assert!(decoded.is_err(), "claim {claim}");
        assert!(peak <= SMALL, "claim {claim}: allocated {peak} bytes");
    }
}

#[test]
fn a_welcome_claiming_params_up_to_the_cap_allocates_no_more_than_the_cap() {
    for claim in [MAX_FRAME_LEN as u64, MAX_FRAME_LEN as u64 - 20, 1 << 20] {
        let payload = payload_with_length(&[0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], claim, b"{}");
        let (decoded, peak) = peak_alloc(|| decode_supervisor_message(&payload));
        assert!(decoded.is_err(), "claim {claim}");
        assert!(peak <= CAP, "claim {claim}: allocated {peak} bytes");
    }
}

#[test]
fn a_done_or_failed_claiming_a_huge_length_is_refused_without_allocating() {
    let claims = CLAIMS.into_iter().chain([MAX_FRAME_LEN as u64, 100]);
    for claim in claims {
        // Done { index: 7, elapsed_ns: 1500000, output: <claimed length> "42" }
        let done: &[u8] = &[
            1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0x60, 0xe3, 0x16, 0, 0, 0, 0, 0,
        ];
        // Failed { index: 7, error: <claimed length> "42" }
        let failed: &[u8] = &[2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        for (name, prefix) in [("Done", done), ("Failed", failed)] {
            let payload = payload_with_length(prefix, claim, b"42");
            let (decoded, peak) = peak_alloc(|| decode_worker_message(&payload));
            assert!(decoded.is_err(), "{name}, claim {claim}");
            assert!(peak <= SMALL, "{name}, claim {claim}: {peak} bytes");
            // The same prefix with its true length decodes: the claim, not a
            // misplaced offset, is what gets refused.
            let honest = payload_with_length(prefix, 2, b"42");
            assert!(
                decode_worker_message(&honest).is_ok(),
                "{name}: the prefix is not a valid message start"
            );
        }
    }
}

#[test]
fn an_oversized_header_is_refused_before_its_payload_is_reserved() {
    for header in [u32::MAX, MAX_FRAME_LEN + 1] {
        let mut bytes = header.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 32]);
        assert!(matches!(
            split_frame(&bytes, MAX_FRAME_LEN),
            Err(ProtocolError::FrameTooLarge { len, max: MAX_FRAME_LEN }) if len == u64::from(header)
        ));

        let (result, peak) = peak_alloc(|| {
            let mut buffer = FrameReader::new();
            assert!(buffer.fill_from(&mut &bytes[..]).unwrap());
            buffer.next_frame().map(|frame| frame.is_some())
        });
        assert!(
            matches!(result, Err(ProtocolError::FrameTooLarge { .. })),
            "header {header:#x}: {result:?}"
        );
        assert!(
            peak <= frame_buffer_bound(bytes.len()),
            "header {header:#x}: {peak} bytes"
        );
    }
}

#[test]
fn a_frame_announced_at_the_cap_is_not_reserved_before_it_arrives() {
    let mut bytes = MAX_FRAME_LEN.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[1, 0, 0, 0, 7]);
    let (result, peak) = peak_alloc(|| {
        let mut buffer = FrameReader::new();
        let mut reader = &bytes[..];
        assert!(buffer.fill_from(&mut reader).unwrap());
        assert!(buffer.next_frame().unwrap().is_none());
        buffer.fill_from(&mut reader)
    });
    assert!(
        matches!(result, Err(ProtocolError::TornFrame)),
        "{result:?}"
    );
    assert!(peak <= frame_buffer_bound(bytes.len()), "{peak} bytes");
}

#[test]
fn the_largest_output_that_fits_the_cap_goes_through_and_one_byte_more_does_not() {
    // PROTOCOL.md promises this bound: the cap less the 28 bytes of a Done
    // before its output.
    let largest = CAP - 28;
    let output = vec![0x5a; largest + 1];
    let fits = WorkerMessage::Done(Done {
        index: u64::MAX,
        elapsed_ns: u64::MAX,
        output: &output[..largest],
    });
    let mut frame = Vec::new();
    encode_frame(&fits, &mut frame).unwrap();
    assert_eq!(frame.len(), HEADER_LEN + CAP);
    let (payload, _) = split_frame(&frame, MAX_FRAME_LEN).unwrap().unwrap();
    assert_eq!(decode_worker_message(&frame[payload]).unwrap(), fits);

    let too_large = WorkerMessage::Done(Done {
        index: u64::MAX,
        elapsed_ns: u64::MAX,
        output: &output,
    });
    let mut frame = vec![7];
    assert!(matches!(
        encode_frame(&too_large, &mut frame),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
    assert_eq!(frame, [7], "a refused frame leaves the buffer as it was");
}
