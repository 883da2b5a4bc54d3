//! The reference worker for the `squares` job: a chunk's output is the sum of
//! `(i * i) % modulus` over its range, in decimal. Fault switches make it
//! misbehave on purpose for tests.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use worker::Chunk;
use worker::faults::{self, Fault, Injected};
use worker::hostile::Greeting;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Sums (i * i) % modulus over each chunk the supervisor assigns"
)]
struct Args {
    /// Misbehave on a chunk: KIND is crash, exit, hang, fail, garbage,
    /// oversized, or one of the lies cancel (an unasked Cancelled), stray (a
    /// Done for a chunk never given), hello (a second Hello), twice (two
    /// Dones), reorder (the answer held back behind the next one), trailing
    /// (bytes after the message), short (a payload that ends early),
    /// overlong (an output length past the payload), badutf8 (a Failed whose
    /// error is not UTF-8), empty (a frame of length 0), bigerror (a Failed
    /// with a 64 MiB error), close (the socket shut, the process alive),
    /// timeless (an elapsed_ns of 2^64 - 1) and torn (half a frame, then exit
    /// 0); it fires on chunk INDEX while the
    /// attempt is below BELOW (on every attempt without it). Repeatable.
    /// Also read from SQUARES_WORKER_FAULTS (comma-separated) when no --fault
    /// is given: the environment is not part of a job's fingerprint, so a
    /// test can change the faults between a run and its resume.
    #[arg(
        long = "fault",
        value_name = "KIND:INDEX[:BELOW]",
        env = "SQUARES_WORKER_FAULTS",
        value_delimiter = ','
    )]
    faults: Vec<Fault>,
    /// Exit with status 1 before saying hello.
    #[arg(long)]
    exit_at_start: bool,
    /// Sleep forever before saying hello.
    #[arg(long)]
    hang_at_start: bool,
    /// Say hello in protocol version N instead of this one.
    #[arg(long, value_name = "N")]
    speak_version: Option<u32>,
    /// Send a Done for chunk 0 before saying hello.
    #[arg(long)]
    answer_before_hello: bool,
    /// Say hello, then never read or write again.
    #[arg(long)]
    deaf_after_hello: bool,
    /// Sleep this long before each chunk, giving up early when it is cancelled.
    #[arg(long, value_name = "MS")]
    slow_ms: Option<u64>,
    /// Spend NS nanoseconds of CPU (a busy loop, given up when the chunk is
    /// cancelled) per item of each chunk: a set cost for jobs whose chunks
    /// size themselves, and for benchmarks.
    #[arg(long, value_name = "NS")]
    item_ns: Option<u64>,
    /// With --item-ns: items from ITEM on cost --dearer-by times as much.
    #[arg(long, value_name = "ITEM", requires = "item_ns")]
    dearer_from: Option<u64>,
    #[arg(long, value_name = "FACTOR", default_value_t = 100)]
    dearer_by: u64,
    /// Print this many lines to stderr at the start of each chunk, each
    /// `squares-worker[PID]: chunk I attempt A line K`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    stderr_lines: u32,
    /// Answer each chunk with a JSON string of MB mebibytes instead of the
    /// sum: large answers, for tests of what the supervisor holds.
    #[arg(long, value_name = "MB")]
    output_mb: Option<u32>,
    /// Answer each chunk as one line, `INDEX SUM` and a newline, so that a
    /// raw output can be read back chunk by chunk.
    #[arg(long)]
    tagged: bool,
    /// Sleep MS before chunk INDEX (every attempt), giving up early when it
    /// is cancelled: one slow chunk among quick ones. Repeatable.
    #[arg(long, value_name = "INDEX:MS")]
    hold: Vec<String>,
    /// Print this many lines to stdout at the start of each chunk, each
    /// `squares-worker[PID]: chunk I stdout line K`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    stdout_lines: u32,
    /// On every chunk, before computing, allocate MB mebibytes, touch every
    /// 4 KiB page of them, and free them again. Under a smaller address-space
    /// limit (`memory_limit`) the allocation fails and the worker aborts.
    #[arg(long, value_name = "MB")]
    alloc_mb: Option<u32>,
}

impl Args {
    /// How to open the conversation: honestly unless a switch says otherwise.
    fn greeting(&self) -> Greeting {
        if let Some(version) = self.speak_version {
            Greeting::Version(version)
        } else if self.answer_before_hello {
            Greeting::AnswerFirst
        } else if self.deaf_after_hello {
            Greeting::Deaf
        } else {
            Greeting::Honest
        }
    }

    /// A lie the SDK cannot tell needs the worker's own serve loop.
    fn lies_on_the_wire(&self) -> bool {
        self.greeting() != Greeting::Honest || self.faults.iter().any(|f| f.kind.needs_own_loop())
    }
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default = "default_modulus")]
    modulus: u64,
}

const DEFAULT_MODULUS: u64 = 10_007;

fn default_modulus() -> u64 {
    DEFAULT_MODULUS
}

#[derive(Debug, thiserror::Error)]
enum SquaresError {
    #[error("invalid job params: {0}")]
    Params(serde_json::Error),
    #[error("params: modulus must be positive")]
    ZeroModulus,
    #[error(transparent)]
    Injected(#[from] Injected),
    #[error("cannot write: {0}")]
    Write(#[from] io::Error),
    #[error("--hold takes INDEX:MS, got {0:?}")]
    Hold(String),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.exit_at_start {
        return ExitCode::from(1);
    }
    if args.hang_at_start {
        faults::hang();
    }
    let mut modulus = None;
    let result = if args.lies_on_the_wire() {
        worker::hostile::serve(&args.faults, args.greeting(), |params, chunk, out| {
            let modulus = match modulus {
                Some(m) => m,
                None => *modulus.insert(read_modulus(params).map_err(|e| e.to_string())?),
            };
            announce(&args, chunk).map_err(|e| e.to_string())?;
            squares(&args, modulus, &|| false, chunk, out).map_err(|e| e.to_string())
        })
    } else {
        worker::serve(|ctx, chunk, out| {
            let modulus = match modulus {
                Some(m) => m,
                None => *modulus.insert(read_modulus(ctx.params_json())?),
            };
            announce(&args, chunk)?;
            faults::inject_all(&args.faults, ctx, chunk)?;
            squares(&args, modulus, &|| ctx.is_cancelled(), chunk, out)
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squares-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read_modulus(params: &str) -> Result<u64, SquaresError> {
    let params = match params.trim() {
        "" => "{}",
        text => text,
    };
    let params: Params = serde_json::from_str(params).map_err(SquaresError::Params)?;
    match params.modulus {
        0 => Err(SquaresError::ZeroModulus),
        m => Ok(m),
    }
}

/// The lines a chunk's start is announced with, as the switches ask.
fn announce(args: &Args, chunk: &Chunk) -> Result<(), SquaresError> {
    if args.stderr_lines > 0 {
        let pid = std::process::id();
        // One write per line: stderr is unbuffered, and a line written in
        // pieces would interleave with other workers' lines.
        let mut stderr = io::stderr().lock();
        for line in 1..=args.stderr_lines {
            let text = format!(
                "squares-worker[{pid}]: chunk {} attempt {} line {line}\n",
                chunk.index, chunk.attempt
            );
            stderr.write_all(text.as_bytes())?;
        }
    }
    if args.stdout_lines > 0 {
        let pid = std::process::id();
        let mut stdout = io::stdout().lock();
        for line in 1..=args.stdout_lines {
            writeln!(
                stdout,
                "squares-worker[{pid}]: chunk {} stdout line {line}",
                chunk.index
            )?;
        }
        stdout.flush()?;
    }
    Ok(())
}

fn squares(
    args: &Args,
    modulus: u64,
    cancelled: &dyn Fn() -> bool,
    chunk: &Chunk,
    out: &mut Vec<u8>,
) -> Result<(), SquaresError> {
    if let Some(mb) = args.alloc_mb {
        faults::allocate_and_touch(mb);
    }
    if let Some(ms) = args.slow_ms
        && faults::sleep_unless_cancelled(cancelled, Duration::from_millis(ms))
    {
        return Ok(());
    }
    for hold in &args.hold {
        let held = hold
            .split_once(':')
            .and_then(|(index, ms)| Some((index.parse::<u64>().ok()?, ms.parse::<u64>().ok()?)));
        let Some((index, ms)) = held else {
            return Err(SquaresError::Hold(hold.clone()));
        };
        if index == chunk.index
            && faults::sleep_unless_cancelled(cancelled, Duration::from_millis(ms))
        {
            return Ok(());
        }
    }
    if let Some(mb) = args.output_mb {
        out.push(b'"');
        out.resize(1 + (mb as usize) * (1 << 20), b'x');
        out.push(b'"');
        return Ok(());
    }
    if let Some(ns) = args.item_ns {
        let cost = item_cost(ns, args.dearer_from, args.dearer_by, chunk.start, chunk.end);
        if spin_unless_cancelled(cancelled, Duration::from_nanos(cost)) {
            return Ok(());
        }
    }
    if let Some(sum) = sum_of_squares(chunk.start, chunk.end, modulus, cancelled) {
        if args.tagged {
            writeln!(out, "{} {sum}", chunk.index)?;
        } else {
            out.extend_from_slice(itoa::Buffer::new().format(sum).as_bytes());
        }
    }
    Ok(())
}

/// Keeps the CPU busy for `duration`; true if the chunk was cancelled first.
fn spin_unless_cancelled(cancelled: &dyn Fn() -> bool, duration: Duration) -> bool {
    let started = std::time::Instant::now();
    let mut spins = 0u32;
    while started.elapsed() < duration {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) && cancelled() {
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// What the items `[start, end)` cost at `ns` each, `factor` times as much
/// from `dearer_from` on.
fn item_cost(ns: u64, dearer_from: Option<u64>, factor: u64, start: u64, end: u64) -> u64 {
    let split = dearer_from.unwrap_or(u64::MAX).clamp(start, end);
    let cheap = split - start;
    let dear = end - split;
    ns.saturating_mul(cheap)
        .saturating_add(ns.saturating_mul(factor).saturating_mul(dear))
}

/// Items between two looks at the cancel flag.
const POLL_EVERY: u64 = 1 << 20;

/// The sum over `[start, end)` of `(i * i) % modulus`, or `None` if
/// `cancelled` turned true on the way.
fn sum_of_squares(
    start: u64,
    end: u64,
    modulus: u64,
    cancelled: &dyn Fn() -> bool,
) -> Option<u128> {
    let mut total = 0u128;
    let mut from = start;
    while from < end {
        if cancelled() {
            return None;
        }
        let to = end.min(from.saturating_add(POLL_EVERY));
        total += block(from, to, modulus);
        from = to;
    }
    Some(total)
}

fn block(from: u64, to: u64, modulus: u64) -> u128 {
    // A constant modulus lets the compiler turn the divisions into multiplications.
    if modulus == DEFAULT_MODULUS {
        block_small(from, to, |x| x % DEFAULT_MODULUS)
    } else if modulus <= 1 << 32 {
        block_small(from, to, |x| x % modulus)
    } else if to <= 1 << 32 {
        (from..to).map(|i| u128::from(i * i % modulus)).sum()
    } else {
        (from..to)
            .map(|i| u128::from(i) * u128::from(i) % u128::from(modulus))
            .sum()
    }
}

/// For a modulus up to 2^32, in `u64`: a remainder's square fits, and so does
/// a block of `POLL_EVERY` terms below 2^32 each.
#[inline(always)]
fn block_small(from: u64, to: u64, rem: impl Fn(u64) -> u64) -> u128 {
    let sum: u64 = if to <= 1 << 32 {
        // i * i fits too: one division per item instead of two.
        (from..to).map(|i| rem(i * i)).sum()
    } else {
        (from..to)
            .map(|i| {
                let r = rem(i);
                rem(r * r)
            })
            .sum()
    };
    u128::from(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(start: u64, end: u64, modulus: u64) -> u128 {
        sum_of_squares(start, end, modulus, &|| false).unwrap()
    }

    fn naive(start: u64, end: u64, modulus: u64) -> u128 {
        (start..end)
            .map(|i| u128::from(i) * u128::from(i) % u128::from(modulus))
            .sum()
    }

    #[test]
    fn the_known_total() {
        assert_eq!(sum(0, 10_000_000, DEFAULT_MODULUS), 49_259_937_824);
        let split: u128 = [0, 3_000_001, 7_777_777, 10_000_000]
            .windows(2)
            .map(|w| sum(w[0], w[1], DEFAULT_MODULUS))
            .sum();
        assert_eq!(split, 49_259_937_824);
    }

    #[test]
    fn agrees_with_u128_arithmetic_on_every_path() {
        let big = 1u64 << 40;
        let edge = 1u64 << 32;
        let moduli = [1, 2, 7, DEFAULT_MODULUS, 1 << 32, (1 << 32) + 15, u64::MAX];
        let ranges = [(0, 5000), (edge - 2000, edge + 2000), (big, big + 3000)];
        for m in moduli {
            for (start, end) in ranges {
                assert_eq!(
                    sum(start, end, m),
                    naive(start, end, m),
                    "m={m} [{start}, {end})"
                );
            }
        }
        let top = u64::MAX;
        assert_eq!(sum(top - 100, top, 12345), naive(top - 100, top, 12345));
    }

    #[test]
    fn an_empty_range_sums_to_zero() {
        assert_eq!(sum(5, 5, DEFAULT_MODULUS), 0);
    }

    #[test]
    fn stops_when_cancelled() {
        assert_eq!(sum_of_squares(0, 10 * POLL_EVERY, 7, &|| true), None);
    }
}
