//! `socketpair-noop MESSAGES WORKERS INFLIGHT`: the floor under any dispatcher that talks
//! to worker processes over Unix sockets. WORKERS children (this program re-executed
//! with `--child FD`, FD one end of an inherited socketpair) echo 24-byte messages; one
//! parent thread keeps INFLIGHT messages outstanding per child until MESSAGES have come
//! back, then prints the rate.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// The size of a chunk assignment: index, start, end.
const MESSAGE: usize = 24;

const USAGE: &str = "socketpair-noop MESSAGES WORKERS INFLIGHT";

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        let fd: RawFd = args
            .get(2)
            .and_then(|a| a.parse().ok())
            .expect("--child FD");
        // SAFETY: the parent put this end of a socketpair at FD for us alone.
        return echo(unsafe { UnixStream::from_raw_fd(fd) });
    }
    let messages = bench_peers::arg(&args, 1, USAGE);
    let workers = bench_peers::arg(&args, 2, USAGE).max(1);
    let inflight = bench_peers::arg(&args, 3, USAGE).max(1);
    let (mut children, mut sockets) = spawn(workers)?;
    let seconds = drive(&mut sockets, messages, inflight)?;
    drop(sockets);
    for child in &mut children {
        let status = child.wait()?;
        assert!(status.success(), "child failed: {status}");
    }
    let rate = messages as f64 / seconds;
    println!(
        "{rate:.0} messages/s ({messages} messages, {workers} workers, {inflight} in flight, \
         {seconds:.3} s after the children are up)"
    );
    Ok(())
}

/// Starts the children and waits for each to answer once, so the clock starts with
/// every child running: the rate is the steady state, not exec and page faults.
fn spawn(workers: u64) -> io::Result<(Vec<Child>, Vec<Worker>)> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut sockets = Vec::new();
    for _ in 0..workers {
        // Both ends are close-on-exec; only the child's end is made inheritable, and
        // it is closed here before the next spawn, so each child gets only its own.
        let (ours, theirs) = UnixStream::pair()?;
        let fd = theirs.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        let child = Command::new(&exe)
            .arg("--child")
            .arg(fd.to_string())
            .stdin(Stdio::null())
            .spawn()?;
        drop(theirs);
        children.push(child);
        sockets.push(Worker::new(ours));
    }
    for worker in &mut sockets {
        worker.stream.write_all(&[0; MESSAGE])?;
        worker.stream.read_exact(&mut [0; MESSAGE])?;
    }
    Ok((children, sockets))
}

struct Worker {
    stream: UnixStream,
    /// Bytes of a reply not yet whole.
    partial: Vec<u8>,
    sent: u64,
    received: u64,
    out: Vec<u8>,
}

impl Worker {
    fn new(stream: UnixStream) -> Self {
        Worker {
            stream,
            partial: Vec::new(),
            sent: 0,
            received: 0,
            out: Vec::new(),
        }
    }

    /// Queues `n` messages, numbered on from the last, and writes them in one call.
    fn send(&mut self, n: u64) -> io::Result<()> {
        self.out.clear();
        for _ in 0..n {
            let seq = self.sent;
            self.out.extend_from_slice(&seq.to_le_bytes());
            self.out.extend_from_slice(&seq.to_le_bytes());
            self.out.extend_from_slice(&(seq + 1).to_le_bytes());
            self.sent += 1;
        }
        self.stream.write_all(&self.out)
    }
}

/// One thread, one poll over all sockets, as a single-threaded dispatcher would run.
fn drive(workers: &mut [Worker], messages: u64, inflight: u64) -> io::Result<f64> {
    let start = Instant::now();
    let mut unsent = messages;
    for worker in workers.iter_mut() {
        let n = inflight.min(unsent);
        unsent -= n;
        worker.send(n)?;
    }
    let mut done = 0;
    let mut buf = vec![0u8; 1 << 16];
    let mut fds: Vec<libc::pollfd> = workers
        .iter()
        .map(|w| libc::pollfd {
            fd: w.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while done < messages {
        // SAFETY: fds is a live array of pollfd of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for (pfd, worker) in fds.iter_mut().zip(workers.iter_mut()) {
            if pfd.revents == 0 {
                continue;
            }
            pfd.revents = 0;
            let n = worker.stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a child hung up",
                ));
            }
            worker.partial.extend_from_slice(&buf[..n]);
            let whole = worker.partial.len() / MESSAGE;
            for reply in worker.partial[..whole * MESSAGE].chunks_exact(MESSAGE) {
                let seq = u64::from_le_bytes(reply[..8].try_into().unwrap());
                assert_eq!(seq, worker.received, "replies out of order");
                worker.received += 1;
            }
            worker.partial.drain(..whole * MESSAGE);
            done += whole as u64;
            let n = (whole as u64).min(unsent);
            unsent -= n;
            if n > 0 {
                worker.send(n)?;
            }
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The child: answers every whole message with itself, a batch per read, until EOF.
fn echo(mut stream: UnixStream) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 16];
    let mut have = 0;
    loop {
        let n = stream.read(&mut buf[have..])?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        let whole = have / MESSAGE * MESSAGE;
        stream.write_all(&buf[..whole])?;
        buf.copy_within(whole..have, 0);
        have -= whole;
    }
}
