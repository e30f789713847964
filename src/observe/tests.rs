//! The access log writer: lines from several threads all arrive, a target
//! that does not drain makes workers drop and count instead of blocking,
//! reopening after a rename splits the lines between the two files, write
//! errors are counted, and stopping writes what was shipped.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::access_log::*;

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(stem: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringgate-log-{}-{}-{stem}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn clf() -> LogFormat {
    LogFormat::from_setting("clf").unwrap()
}

/// Logs one CLF line with request id `id`.
fn log(buf: &mut LogBuffer, format: &LogFormat, clock: &mut ClfClock, id: &str) {
    let rec = LogRecord {
        method: b"GET",
        path: b"/ping",
        resource_path: Some("/ping"),
        status: 200,
        ..LogRecord::new(id.as_bytes(), 1_700_000_000_000)
    };
    buf.log(format, &rec, clock);
}

/// The request ids (the clf preset's next-to-last field) of a file's lines.
fn ids(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.rsplit(' ').nth(1).unwrap().to_string())
        .collect()
}

/// Waits up to 10 s for `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn lines_from_two_threads_all_arrive() {
    let dir = TempDir::new("two");
    let path = dir.path("access.log");
    let log_ = AccessLog::start(LogTarget::File(path.clone()), 1024).unwrap();
    const PER_THREAD: usize = 20_000;
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let log_ = log_.clone();
            std::thread::spawn(move || {
                let (format, mut clock, mut buf) = (clf(), ClfClock::new(), log_.buffer());
                for i in 0..PER_THREAD {
                    log(&mut buf, &format, &mut clock, &format!("t{t}-{i}"));
                }
                buf.flush();
                assert_eq!(buf.pending_lines(), 0);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log_.stop();
    let stats = log_.stats();
    assert_eq!(stats.lines_written, 2 * PER_THREAD as u64);
    assert_eq!(stats.dropped_lines, 0);
    assert_eq!(stats.write_errors, 0);
    assert_eq!(stats.bytes_written, fs::metadata(&path).unwrap().len());
    let got = ids(&path);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 2 * PER_THREAD);
    assert_eq!(unique.len(), got.len());
    for t in 0..2 {
        for i in [0, PER_THREAD / 2, PER_THREAD - 1] {
            assert!(unique.contains(&format!("t{t}-{i}")));
        }
    }
    // Lines of one thread stay in order.
    let t0: Vec<&String> = got.iter().filter(|id| id.starts_with("t0-")).collect();
    assert!(t0.windows(2).all(|w| {
        let n = |s: &str| s[3..].parse::<usize>().unwrap();
        n(w[0]) < n(w[1])
    }));
}

/// Makes a FIFO at `path` (mkfifo(3)).
#[allow(unsafe_code)]
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

#[test]
fn a_target_that_does_not_drain_drops_instead_of_blocking() {
    let dir = TempDir::new("fifo");
    let path = dir.path("fifo");
    mkfifo(&path);
    // Hold the read end open (so the writer's open succeeds) and read
    // nothing: the writer fills the pipe and blocks in write.
    let mut reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let log_ = AccessLog::start(LogTarget::File(path.clone()), 4).unwrap();

    const PRODUCED: u64 = 200_000;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let producer = {
        let log_ = log_.clone();
        std::thread::spawn(move || {
            let (format, mut clock, mut buf) = (clf(), ClfClock::new(), log_.buffer());
            let started = Instant::now();
            for i in 0..PRODUCED {
                log(&mut buf, &format, &mut clock, &format!("f-{i}"));
            }
            buf.flush();
            done_tx.send(started.elapsed()).unwrap();
        })
    };
    let took = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the producer blocked on a stuck writer");
    producer.join().unwrap();
    let stats = log_.stats();
    assert!(stats.dropped_lines > 0, "{stats:?}");
    assert_eq!(stats.queued_batches, 4, "{stats:?}");
    eprintln!("200,000 lines against a stuck writer in {took:?}: {stats:?}");

    // Now drain the FIFO while stop writes what was queued.
    let drain = std::thread::spawn(move || {
        let (mut bytes, mut chunk) = (Vec::new(), vec![0u8; 1 << 16]);
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => return bytes, // the writer closed its end
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    log_.stop();
    let stats = log_.stats();
    let drained = drain.join().unwrap();
    assert_eq!(
        stats.lines_written + stats.dropped_lines,
        PRODUCED,
        "{stats:?}"
    );
    assert_eq!(
        drained.iter().filter(|&&b| b == b'\n').count() as u64,
        stats.lines_written
    );
    assert_eq!(drained.len() as u64, stats.bytes_written);
    assert_eq!(stats.queued_batches, 0);
}

#[test]
fn reopen_after_rename_splits_the_lines() {
    let dir = TempDir::new("rotate");
    let (path, rotated) = (dir.path("access.log"), dir.path("access.log.1"));
    let log_ = AccessLog::start(LogTarget::File(path.clone()), 16).unwrap();
    let (format, mut clock, mut buf) = (clf(), ClfClock::new(), log_.buffer());
    for i in 0..100 {
        log(&mut buf, &format, &mut clock, &format!("a-{i}"));
    }
    buf.flush();
    wait_for("the first lines", || log_.stats().lines_written == 100);

    fs::rename(&path, &rotated).unwrap();
    log_.reopen();
    // An idle writer reopens at once (the new file appears with no line).
    wait_for("the reopen", || log_.stats().reopens == 1);
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644 & !umask()
    );

    for i in 0..50 {
        log(&mut buf, &format, &mut clock, &format!("b-{i}"));
    }
    buf.flush();
    log_.stop();
    let want = |p: &str, n: usize| (0..n).map(|i| format!("{p}-{i}")).collect::<Vec<_>>();
    assert_eq!(ids(&rotated), want("a", 100));
    assert_eq!(ids(&path), want("b", 50));
    assert_eq!(log_.stats().reopens, 1);
}

/// The process's umask (read from /proc, to leave it unchanged).
fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[test]
fn stop_writes_everything_shipped_and_drops_what_comes_after() {
    let dir = TempDir::new("stop");
    let path = dir.path("access.log");
    let log_ = AccessLog::start(LogTarget::File(path.clone()), 8).unwrap();
    let (format, mut clock, mut buf) = (clf(), ClfClock::new(), log_.buffer());
    // Several full batches, then a partial one, all shipped before stop.
    for i in 0..2_000 {
        log(&mut buf, &format, &mut clock, &format!("s-{i}"));
    }
    buf.flush();
    // A line begun but not committed is not shipped.
    buf.line().extend_from_slice(b"half a line");
    // Stop from two threads at once: both return once the writer is done.
    let other = {
        let log_ = log_.clone();
        std::thread::spawn(move || log_.stop())
    };
    log_.stop();
    other.join().unwrap();
    assert_eq!(ids(&path).len() as u64, log_.stats().lines_written);
    assert_eq!(
        log_.stats().lines_written + log_.stats().dropped_lines,
        2_000
    );

    let before = log_.stats();
    for i in 0..10 {
        log(&mut buf, &format, &mut clock, &format!("late-{i}"));
    }
    buf.flush();
    log(&mut buf, &format, &mut clock, "dropped-with-the-buffer");
    drop(buf);
    log_.stop(); // again: nothing to do
    log_.reopen(); // after stop: ignored
    let after = log_.stats();
    assert_eq!(after.dropped_lines, before.dropped_lines + 11);
    assert_eq!(after.lines_written, before.lines_written);
    assert_eq!(ids(&path).len() as u64, after.lines_written);
}

#[test]
fn write_errors_are_counted_and_the_lines_dropped() {
    // Every write to /dev/full fails with ENOSPC.
    let log_ = AccessLog::start(LogTarget::File("/dev/full".into()), 8).unwrap();
    let (format, mut clock, mut buf) = (clf(), ClfClock::new(), log_.buffer());
    for i in 0..1_000 {
        log(&mut buf, &format, &mut clock, &format!("e-{i}"));
    }
    buf.flush();
    log_.stop();
    let stats = log_.stats();
    assert_eq!(stats.lines_written, 0);
    assert_eq!(stats.dropped_lines, 1_000);
    assert!(stats.write_errors >= 2, "{stats:?}");
}

#[test]
fn starting_on_a_missing_directory_fails() {
    let err =
        AccessLog::start(LogTarget::File("/nonexistent-dir/x/access.log".into()), 4).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn a_dropped_log_stops_its_writer() {
    let dir = TempDir::new("drop");
    let path = dir.path("access.log");
    let log_: Arc<AccessLog> = AccessLog::start(LogTarget::File(path.clone()), 4).unwrap();
    let (format, mut clock, mut buf) = (clf(), ClfClock::new(), log_.buffer());
    log(&mut buf, &format, &mut clock, "only");
    drop(buf); // flushes
    drop(log_); // stops: the line is on disk after
    assert_eq!(ids(&path), ["only"]);
}
