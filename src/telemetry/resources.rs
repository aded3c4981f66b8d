//! The service's own resource usage, read from `/proc/self` at scrape time:
//! CPU seconds, resident memory, open and maximum file descriptors, start time.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

pub fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(SelfResources {
        start_time: start_time_seconds(),
    }));
}

#[derive(Debug)]
struct SelfResources {
    start_time: f64,
}

impl Collector for SelfResources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = read_usage();
        let cpu = ConstCounter::new(usage.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "cpu",
            "CPU time used by the service (user + system)",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(usage.resident_bytes);
        rss.encode(encoder.encode_descriptor(
            "resident_memory",
            "Resident memory of the service",
            Some(&Unit::Bytes),
            rss.metric_type(),
        )?)?;
        let fds = ConstGauge::new(usage.open_fds);
        fds.encode(encoder.encode_descriptor(
            "open_fds",
            "Open file descriptors of the service",
            None,
            fds.metric_type(),
        )?)?;
        let max_fds = ConstGauge::new(usage.max_fds);
        max_fds.encode(encoder.encode_descriptor(
            "max_fds",
            "File descriptor limit of the service",
            None,
            max_fds.metric_type(),
        )?)?;
        let start = ConstGauge::new(self.start_time);
        start.encode(encoder.encode_descriptor(
            "start_time",
            "Unix time the service started",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

#[derive(Debug, Default, PartialEq)]
struct Usage {
    cpu_seconds: f64,
    resident_bytes: i64,
    open_fds: i64,
    max_fds: i64,
}

fn read_usage() -> Usage {
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes into the struct we hand it and nothing else.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX)
    } else {
        0
    };
    Usage {
        cpu_seconds: cpu_seconds(),
        resident_bytes: resident_bytes(),
        open_fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64),
        max_fds,
    }
}

/// CPU time this process has used (user + system), in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we hand it and nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
        timeval_seconds(ru.ru_utime) + timeval_seconds(ru.ru_stime)
    } else {
        0.0
    }
}

/// Resident memory of this process, in bytes (from `/proc/self/statm`).
pub fn resident_bytes() -> i64 {
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1);
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<i64>().ok()))
        .map_or(0, |pages| pages * page)
}

pub fn timeval_seconds(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// Start time from `/proc/self/stat` (field 22, in clock ticks since boot) and the boot time.
fn start_time_seconds() -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let started = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        // The command name may hold spaces; fields after the closing parenthesis are plain.
        let rest = &s[s.rfind(')')? + 2..];
        rest.split_whitespace().nth(19)?.parse::<f64>().ok()
    });
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok()))
    });
    match (started, boot) {
        (Some(started), Some(boot)) => boot + started / ticks,
        _ => crate::clock::unix_seconds(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_usage() {
        let u = read_usage();
        assert!(u.resident_bytes > 1 << 20, "{u:?}");
        assert!(u.open_fds >= 3 && u.max_fds >= u.open_fds, "{u:?}");
        let now = crate::clock::unix_seconds();
        let start = start_time_seconds();
        assert!(start <= now + 1.0 && start > now - 3600.0, "start {start} now {now}");
    }
}
