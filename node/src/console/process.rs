//! What the operating system says about this process: resident memory and CPU time, for
//! the console's `stats` (the bench divides deliveries by these).

use serde::Serialize;

/// A snapshot of the process's resource use.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    /// The process id.
    pub pid: u32,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time since start, seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_files: u64,
}

/// Reads the snapshot from `/proc/self` (Linux); zeros elsewhere.
pub fn current() -> ProcessStats {
    let mut stats = ProcessStats { pid: std::process::id(), rss_bytes: 0, cpu_seconds: 0.0, threads: 0, open_files: 0 };
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            let number = || line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if line.starts_with("VmRSS:") {
                stats.rss_bytes = number() * 1024;
            } else if line.starts_with("Threads:") {
                stats.threads = number();
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may contain spaces) start at state (3rd).
        if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
            stats.cpu_seconds = (ticks(11) + ticks(12)) / clock_ticks_per_second();
        }
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        stats.open_files = entries.count() as u64;
    }
    stats
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let busy: u64 = (0..20_000_000u64).fold(0, |a, b| a.wrapping_add(b * b));
        assert!(busy > 0);
        let stats = super::current();
        assert!(stats.rss_bytes > 1024 * 1024, "{stats:?}");
        assert!(stats.threads >= 1);
        assert!(stats.open_files >= 3);
    }
}
