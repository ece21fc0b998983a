//! OS processes for local instances: spawned in their own process group so
//! they outlive the server, identified after a restart by PID plus the
//! kernel's start time (so a reused PID is never mistaken for an instance).

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

/// The kernel's start time of a process (clock ticks since boot), if it runs.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None; // a zombie is dead
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process with this PID is still the one that was started.
pub fn is_alive(pid: u32, started: u64) -> bool {
    start_time(pid) == Some(started)
}

/// Finds a process whose environment says it is this instance (for a crash
/// between spawning it and recording its PID).
pub fn find_by_instance(instance: &str) -> Option<u32> {
    let needle = format!("LIFEBOAT_INSTANCE={instance}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
            && start_time(pid).is_some()
        {
            return Some(pid);
        }
    }
    None
}

/// Signals the process group the instance leads (it was spawned with
/// `process_group(0)`).
fn signal_group(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// SIGTERM to the instance's process group, SIGKILL after `grace`.
pub async fn stop(pid: u32, started: u64, grace: Duration) {
    if !is_alive(pid, started) {
        return;
    }
    signal_group(pid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !is_alive(pid, started) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pid, Signal::SIGKILL);
    for _ in 0..100 {
        if !is_alive(pid, started) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGKILL at once (simulated region failure).
pub fn kill_now(pid: u32, started: u64) {
    if is_alive(pid, started) {
        signal_group(pid, Signal::SIGKILL);
    }
}

/// At most this much output per read.
const MAX_READ: u64 = 1024 * 1024;

/// Complete lines of a log file: the last N, or those after a byte cursor
/// (from the start again if the file was truncated below it).
pub fn read_log(path: &Path, from: super::super::LogFrom) -> std::io::Result<super::super::LogRead> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let (start, tail) = match from {
        super::super::LogFrom::Tail(n) => (len.saturating_sub(MAX_READ), Some(n)),
        super::super::LogFrom::Cursor(c) if c > len => (0, None),
        super::super::LogFrom::Cursor(c) => (c, None),
    };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(MAX_READ).read_to_end(&mut bytes)?;
    // Only complete lines: a partial last line is read next time, unless
    // the whole read is one line (longer than MAX_READ): that is shown cut,
    // and the cursor moves past it, or `logs --follow` would never advance.
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None if bytes.len() as u64 == MAX_READ && tail.is_none() => {
            let shown = String::from_utf8_lossy(&bytes[..MAX_LINE]);
            let line = format!("{shown}… (a line longer than {} MiB, cut)", MAX_READ >> 20);
            return Ok(super::super::LogRead { lines: vec![line], next: start + MAX_READ });
        }
        None => 0,
    };
    let text = String::from_utf8_lossy(&bytes[..complete]);
    let mut lines: Vec<String> = text.lines().map(clip_line).collect();
    if let Some(n) = tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    Ok(super::super::LogRead { lines, next: start + complete as u64 })
}

/// The longest line a read shows whole; longer ones are cut.
const MAX_LINE: usize = 16 * 1024;

fn clip_line(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_string();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes, cut)", &line[..end], line.len())
}

/// The last `n` lines of a log file, from its last 64 KiB only (a log can
/// be gigabytes: it is never read whole).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.take(WINDOW).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut lines: Vec<&str> = text.lines().collect();
    // The window's first line is a piece of a longer one (unless it is all there is).
    if start > 0 && lines.len() > 1 {
        lines.remove(0);
    }
    lines[lines.len().saturating_sub(n)..].iter().map(|l| l.chars().take(500).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_longer_than_a_read_is_cut_and_passed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("output.log");
        let mut text = "x".repeat(2 * MAX_READ as usize + 10);
        text.push_str("\nafter\n");
        std::fs::write(&log, &text).unwrap();
        let mut cursor = 0;
        let mut seen = Vec::new();
        for _ in 0..5 {
            let r = read_log(&log, crate::provider::LogFrom::Cursor(cursor)).unwrap();
            assert!(r.next > cursor || r.lines.is_empty(), "the cursor moves");
            cursor = r.next;
            seen.extend(r.lines);
        }
        assert_eq!(cursor, text.len() as u64, "read to the end");
        assert!(seen[0].ends_with("(a line longer than 1 MiB, cut)") && seen[0].len() < 20_000, "{}", seen[0].len());
        assert_eq!(seen.last().unwrap(), "after");
        assert!(seen.iter().all(|l| l.len() < 20_000));
    }

    #[test]
    fn tail_reads_only_the_end_of_a_big_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("output.log");
        let f = std::fs::File::create(&log).unwrap();
        f.set_len(3 << 30).unwrap(); // 3 GiB, sparse
        drop(f);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut f, b"one\ntwo\nfatal: no database\n").unwrap();
        assert_eq!(tail(&log, 2), vec!["two".to_string(), "fatal: no database".to_string()]);
    }

    #[test]
    fn own_process_is_alive_and_found_by_pid() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert!(is_alive(me, t));
        assert!(!is_alive(me, t + 1));
        assert!(start_time(u32::MAX - 1).is_none());
    }
}
