//! The Prometheus endpoint end to end: scraped over loopback while a job runs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{PATIENCE, Run, Scenario, squares_job};

/// A loopback port nothing listens on right now. Another process could take
/// it before the supervisor does; on loopback in a test run that is rare
/// enough to live with.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One sample line of the text exposition format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// GETs the metrics page with a bare HTTP/1.0 request, so the server closes
/// the connection after the answer and reading to the end is the whole body.
fn scrape(addr: SocketAddr) -> Result<String, String> {
    let timeout = Duration::from_secs(10);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {response:?}"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answered {status:?}"));
    }
    Ok(body.to_owned())
}

/// Parses the text exposition format: comments skipped, one sample a line.
fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.trim_end().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `key="value",…` with the format's escapes (`\\`, `\"`, `\n`) in values.
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
    Some(labels)
}

/// The value of the series `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// Waits until workers have announced `count` more chunks on stderr.
fn wait_for_chunks(run: &mut Run, count: usize) {
    for _ in 0..count {
        run.wait_for_line("announcing a chunk", |line| line.contains("]: chunk "));
    }
}

#[test]
fn the_endpoint_counts_chunks_while_the_job_runs() {
    let scenario = Scenario::new();
    // Slow enough that the run outlives a few once-a-second gauge samples.
    let job = scenario.job(
        "metered.toml",
        &squares_job(
            60_000,
            1000,
            &["--slow-ms", "100", "--stderr-lines", "1"],
            "",
        ),
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut run = scenario.start(&[
        "-w",
        "2",
        "--metrics-addr",
        &addr.to_string(),
        job.to_str().unwrap(),
    ]);
    let done = [("job", "metered"), ("outcome", "done")];

    wait_for_chunks(&mut run, 3);
    let first = parse_exposition(&scrape(addr).unwrap_or_else(|e| panic!("scraping {addr}: {e}")));
    let done_first = value(&first, "supervisor_chunks_total", &done)
        .unwrap_or_else(|| panic!("no done counter in {first:#?}"));
    for name in [
        "supervisor_chunks_dispatched_total",
        "supervisor_chunks_in_flight",
        "supervisor_chunks_queued",
        "supervisor_workers_alive",
        "supervisor_draining",
    ] {
        assert!(
            value(&first, name, &[("job", "metered")]).is_some(),
            "no {name} in {first:#?}"
        );
    }
    assert_eq!(
        value(&first, "supervisor_draining", &[]),
        Some(0.0),
        "{first:#?}"
    );

    // The gauges are sampled about once a second and answers arrive in
    // batches, so look again until both have caught up, within the patience.
    wait_for_chunks(&mut run, 5);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(addr).unwrap_or_else(|e| panic!("scraping {addr} again: {e}"));
        let now = parse_exposition(&text);
        let done_now = value(&now, "supervisor_chunks_total", &done).unwrap_or(0.0);
        let alive = value(&now, "supervisor_workers_alive", &[]);
        if done_now > done_first && alive == Some(2.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "done stayed at {done_first} or workers_alive is not 2 ({alive:?}):\n{text}"
        );
        thread::sleep(Duration::from_millis(50));
    }

    run.finish().expect_code(0);
    scenario.assert_no_survivors();
}

#[test]
fn a_metrics_address_in_use_exits_2_before_anything_starts() {
    let scenario = Scenario::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let job = scenario.job("busy.toml", &squares_job(10_000, 1000, &[], ""));
    let finished = scenario.run(&["--metrics-addr", &addr, job.to_str().unwrap()]);
    finished.expect_code(2);
    assert!(
        finished.stderr.contains(&addr) && finished.stderr.contains("in use"),
        "{}",
        finished.stderr
    );
    assert!(!scenario.path("busy.jsonl").exists());
    assert!(!scenario.path(".supervisor").exists());
    scenario.assert_no_survivors();
    drop(taken);
}

#[test]
fn exposition_lines_parse() {
    let samples = parse_exposition(
        "# HELP x a thing\n# TYPE x counter\n\
         x{job=\"a\\\"b\",outcome=\"done\"} 3\n\
         y 1.5\n\
         z_bucket{le=\"+Inf\"} 4\n",
    );
    assert_eq!(
        value(&samples, "x", &[("job", "a\"b"), ("outcome", "done")]),
        Some(3.0)
    );
    assert_eq!(value(&samples, "y", &[]), Some(1.5));
    assert_eq!(value(&samples, "z_bucket", &[("le", "+Inf")]), Some(4.0));
    assert_eq!(value(&samples, "x", &[("outcome", "failed")]), None);
}
