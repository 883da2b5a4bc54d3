//! `check --start`: one worker started as a run starts it, greeted and
//! stopped, to see that it can, and what it said when it could not.

use std::time::{Duration, Instant};

use protocol::codec::decode_worker_message;
use protocol::connection::{FrameReader, FrameWriter};
use protocol::message::Welcome;
use protocol::{PROTOCOL_VERSION, SupervisorMessage, WorkerMessage};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::spawn::{describe_exit, signal_group, spawn_worker};
use crate::config::Job;
use crate::dispatcher::Settings;

/// How long the worker gets to exit once told to stop.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// What of its stderr is quoted when it could not start.
const QUOTED_BYTES: usize = 4 * 1024;

/// What the worker said first.
enum Heard {
    Hello(u32),
    Broke(String),
    /// Its socket closed before it said anything.
    Closed,
}

/// A worker that started: its pid and how long its hello took.
#[derive(Debug)]
pub struct Trial {
    pub pid: u32,
    pub hello_after: Duration,
}

/// Starts one worker of `job` and stops it again. The error says why it
/// could not start, with the end of what it wrote to stderr.
pub async fn try_start(job: &Job) -> Result<Trial, String> {
    let settings = Settings::for_job(job);
    let started_at = Instant::now();
    let mut started = spawn_worker(&job.worker, 0)
        .map_err(|e| format!("the worker could not be started: {e}"))?;
    let pid = started.pid;
    let stderr = tokio::spawn(read_all(started.stderr));
    let stdout = tokio::spawn(read_all(started.stdout));
    let (mut read_half, mut write_half) = started.socket.split();
    let mut frames = FrameReader::new();
    let heard = tokio::time::timeout(settings.start_timeout, async {
        loop {
            match frames.next_frame() {
                Ok(Some(payload)) => {
                    return match decode_worker_message(payload) {
                        Ok(WorkerMessage::Hello(hello)) => Heard::Hello(hello.protocol_version),
                        Ok(other) => Heard::Broke(format!("its first message was {other:?}")),
                        Err(error) => Heard::Broke(error.to_string()),
                    };
                }
                Ok(None) => {}
                Err(error) => return Heard::Broke(error.to_string()),
            }
            match frames.fill_from_async(&mut read_half).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return Heard::Closed,
            }
        }
    })
    .await;
    let hello_after = started_at.elapsed();
    let outcome = match heard {
        Ok(Heard::Hello(PROTOCOL_VERSION)) => Ok(Trial { pid, hello_after }),
        Ok(Heard::Hello(version)) => Err(format!(
            "the worker speaks protocol version {version}, the supervisor version {PROTOCOL_VERSION}"
        )),
        Ok(Heard::Broke(why)) => Err(format!("the worker broke the protocol: {why}")),
        Ok(Heard::Closed) => Err("the worker could not start".to_owned()),
        Err(_) => Err(format!(
            "the worker did not say hello within {}",
            crate::dispatcher::humanize(settings.start_timeout)
        )),
    };
    if outcome.is_ok() {
        // Greeted, then told there is no work: what a run's end does.
        let mut out = FrameWriter::new();
        let welcome = SupervisorMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            worker_id: 0,
            params: settings.params_json.clone(),
            input: settings.input.clone(),
        });
        let sent = out
            .push(&welcome)
            .and_then(|()| out.push(&SupervisorMessage::Stop));
        if sent.is_ok() {
            let _ = out.write_to_async(&mut write_half).await;
        }
    } else {
        signal_group(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let status = match tokio::time::timeout(STOP_GRACE, started.child.wait()).await {
        Ok(Ok(status)) => describe_exit(status),
        Ok(Err(error)) => format!("could not be waited for: {error}"),
        Err(_) => {
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = started.child.wait().await;
            "did not exit when told to stop, and was killed".to_owned()
        }
    };
    signal_group(pid, nix::sys::signal::Signal::SIGKILL);
    let said = stderr.await.unwrap_or_default();
    let _ = stdout.await;
    match outcome {
        Ok(trial) if status == "exit status 0" => Ok(trial),
        Ok(_) => Err(with_last_words(
            format!("the worker said hello but then {status} when told to stop"),
            &said,
        )),
        Err(reason) => Err(with_last_words(format!("{reason} ({status})"), &said)),
    }
}

/// `reason`, and the end of what the worker wrote to stderr.
fn with_last_words(reason: String, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim_end();
    if text.is_empty() {
        return reason;
    }
    let mut from = text.len().saturating_sub(QUOTED_BYTES);
    while !text.is_char_boundary(from) {
        from += 1;
    }
    format!("{reason}{}{}", crate::dispatcher::LAST_WORDS, &text[from..])
}

async fn read_all(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all).await;
    all
}
