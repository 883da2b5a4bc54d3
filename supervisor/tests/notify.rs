//! systemd notification against a real datagram socket standing in for the
//! service manager, and the progress line it carries.

use std::io::ErrorKind;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use supervisor::dispatcher::Counts;
use supervisor::observers::notify::{Notifier, progress_status};

/// The environment is process-wide and tests run on parallel threads, so every
/// check that needs `NOTIFY_SOCKET` or `WATCHDOG_*` lives in this one test; the
/// other tests in this file never read the environment.
#[test]
fn notifier_talks_to_the_socket_named_by_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager.set_nonblocking(true).unwrap();
    let pid = std::process::id().to_string();

    set_env(&[
        ("NOTIFY_SOCKET", Some(path.as_os_str().to_str().unwrap())),
        ("WATCHDOG_USEC", Some("2000000")),
        ("WATCHDOG_PID", Some(&pid)),
    ]);
    let mut notifier = Notifier::from_env();
    assert!(notifier.is_active());
    assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(1)));
    assert!(
        std::env::var_os("NOTIFY_SOCKET").is_some(),
        "the environment is left as it was"
    );

    notifier.ready();
    assert_eq!(receive(&manager), ["READY=1\n"]);
    notifier.ready();
    assert!(receive(&manager).is_empty(), "READY=1 is sent once");

    notifier.status("3/10 chunks done");
    notifier.status("3/10 chunks done");
    notifier.status("4/10 chunks done\nFAKE=1");
    assert_eq!(
        receive(&manager),
        [
            "STATUS=3/10 chunks done\n",
            "STATUS=4/10 chunks done FAKE=1\n"
        ],
        "an unchanged status is not resent; a newline cannot start another assignment"
    );

    notifier.watchdog();
    notifier.extend_timeout(Duration::from_secs(30));
    notifier.extend_timeout(Duration::from_secs(365 * 24 * 3600));
    notifier.stopping();
    notifier.stopping();
    assert_eq!(
        receive(&manager),
        [
            "WATCHDOG=1\n",
            "EXTEND_TIMEOUT_USEC=30000000\n",
            "EXTEND_TIMEOUT_USEC=4294967295\n",
            "STOPPING=1\n",
        ]
    );

    // The address was read once: the notifier does not follow the environment.
    set_env(&[("NOTIFY_SOCKET", None)]);
    notifier.status("5/10 chunks done");
    assert_eq!(receive(&manager), ["STATUS=5/10 chunks done\n"]);

    // A watchdog meant for another process (our parent, say) is not ours.
    set_env(&[
        ("NOTIFY_SOCKET", Some(path.as_os_str().to_str().unwrap())),
        ("WATCHDOG_PID", Some("1")),
    ]);
    let mut notifier = Notifier::from_env();
    assert_eq!(notifier.watchdog_interval(), None);
    notifier.watchdog();
    assert!(receive(&manager).is_empty(), "no pings without a watchdog");

    // `@name` is the abstract namespace.
    let name = format!("supervisor-notify-test-{pid}");
    let abstract_manager =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    abstract_manager.set_nonblocking(true).unwrap();
    set_env(&[("NOTIFY_SOCKET", Some(&format!("@{name}")))]);
    let mut notifier = Notifier::from_env();
    notifier.ready();
    assert_eq!(receive(&abstract_manager), ["READY=1\n"]);

    // Nobody listening, or an address that cannot be one: the run goes on.
    let gone = dir.path().join("gone.sock");
    let too_long = format!("/{}", "x".repeat(200));
    for socket in [gone.to_str().unwrap(), &too_long] {
        set_env(&[("NOTIFY_SOCKET", Some(socket))]);
        let mut notifier = Notifier::from_env();
        assert!(notifier.is_active());
        notifier.ready();
        notifier.status("still running");
        notifier.watchdog();
        notifier.stopping();
    }

    // No NOTIFY_SOCKET (or an empty one): nothing at all, even with a watchdog.
    set_env(&[
        ("WATCHDOG_PID", Some(&pid)),
        ("WATCHDOG_USEC", Some("2000000")),
    ]);
    for socket in [None, Some("")] {
        set_env(&[("NOTIFY_SOCKET", socket)]);
        let mut notifier = Notifier::from_env();
        assert!(!notifier.is_active());
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready();
        notifier.status("running");
        notifier.extend_timeout(Duration::from_secs(1));
        notifier.watchdog();
        notifier.stopping();
    }
    assert!(receive(&manager).is_empty());
    set_env(&[("WATCHDOG_PID", None), ("WATCHDOG_USEC", None)]);
}

fn set_env(vars: &[(&str, Option<&str>)]) {
    for &(key, value) in vars {
        // SAFETY: no other test in this binary reads or writes the
        // environment, and the code under test reads it on this thread.
        unsafe {
            match value {
                Some(value) => std::env::set_var(key, value),
                None => std::env::remove_var(key),
            }
        }
    }
}

/// Every datagram waiting on the socket. Sends are synchronous, so whatever
/// the notifier sent is already queued.
fn receive(socket: &UnixDatagram) -> Vec<String> {
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => messages.push(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return messages,
            Err(e) => panic!("cannot read the notify socket: {e}"),
        }
    }
}

#[test]
fn progress_line_while_running() {
    let counts = Counts {
        total: Some(10_000),
        done: 1234,
        failed: 2,
        retried: 5,
        crashes: 1,
        ..Counts::default()
    };
    assert_eq!(
        progress_status(&counts, 8, 2, false),
        "1234/10000 chunks done, 2 failed, 5 retried, 8 in flight, 2 workers"
    );
    let one = Counts {
        total: Some(1),
        ..Counts::default()
    };
    assert_eq!(
        progress_status(&one, 1, 1, false),
        "0/1 chunk done, 0 failed, 0 retried, 1 in flight, 1 worker"
    );
    let unknown_total = Counts {
        total: None,
        done: 7,
        ..Counts::default()
    };
    assert_eq!(
        progress_status(&unknown_total, 0, 4, false),
        "7 chunks done, 0 failed, 0 retried, 0 in flight, 4 workers"
    );
}

#[test]
fn progress_line_of_a_resumed_run_counts_the_earlier_one() {
    let counts = Counts {
        total: Some(10_000),
        done: 1234,
        skipped: 4000,
        ..Counts::default()
    };
    assert_eq!(
        progress_status(&counts, 8, 2, false),
        "5234/10000 chunks done (4000 before this run), 0 failed, 0 retried, 8 in flight, 2 workers"
    );
    assert_eq!(
        progress_status(&counts, 8, 2, true),
        "draining: 8 chunks in flight, 5234/10000 done (4000 before this run)"
    );
}

#[test]
fn progress_line_while_draining() {
    let counts = Counts {
        total: Some(10_000),
        done: 1234,
        retried: 5,
        ..Counts::default()
    };
    assert_eq!(
        progress_status(&counts, 8, 2, true),
        "draining: 8 chunks in flight, 1234/10000 done"
    );
    let counts = Counts {
        failed: 3,
        ..counts
    };
    assert_eq!(
        progress_status(&counts, 1, 1, true),
        "draining: 1 chunk in flight, 1234/10000 done, 3 failed"
    );
}
