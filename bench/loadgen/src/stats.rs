//! Measurements for `roomcast-bench`: a latency histogram, CPU time and resident memory read from `/proc`.
//!
//! Owns only arithmetic and `/proc` parsing; no sockets. Recording a latency is an index computation and an
//! increment, so it can be done for every delivery without slowing the generator down.

use std::fs;

/// Sub-buckets per power of two: 32 gives every bucket a width of at most 1/32 (about 3%) of its value.
const SUB_BITS: u32 = 5;
const SUB_COUNT: usize = 1 << SUB_BITS;
/// Enough buckets for any `u64`.
const BUCKETS: usize = (65 - SUB_BITS as usize) * SUB_COUNT;

/// A log-linear histogram of nanosecond values: exact below 64 ns, within about 3% above.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// Adds one value.
    pub fn record(&mut self, value: u64) {
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Forgets every value, keeping the buckets' memory.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0;
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded, exactly.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding it, never above the maximum.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let low = bucket_low(index);
                let high = bucket_low(index + 1);
                return (low + (high - low) / 2).min(self.max);
            }
        }
        self.max
    }
}

/// The bucket of `value`: the value itself below 64, else its octave and its next five bits.
fn bucket_of(value: u64) -> usize {
    if value < (2 * SUB_COUNT) as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    let mantissa = (value >> shift) as usize;
    shift as usize * SUB_COUNT + mantissa
}

/// The smallest value in bucket `index`.
fn bucket_low(index: usize) -> u64 {
    if index < 2 * SUB_COUNT {
        return index as u64;
    }
    let shift = index / SUB_COUNT - 1;
    let mantissa = (index % SUB_COUNT + SUB_COUNT) as u128;
    u64::try_from(mantissa << shift).unwrap_or(u64::MAX)
}

/// Clock ticks per second in `/proc/PID/stat` (USER_HZ, 100 on Linux).
pub const TICKS_PER_SEC: f64 = 100.0;

/// User plus system CPU time of a process, in clock ticks: fields 14 and 15 of `/proc/PID/stat`.
/// `pid` of `None` reads this process.
pub fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count fields from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name come field 3 (state) onwards, so utime (14) is the 12th and stime (15) the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Ticks every CPU of the machine spent stolen by the hypervisor (the eighth value of `/proc/stat`'s `cpu` line):
/// time a virtual CPU wanted to run and the host ran something else. Compared before and after a run, it tells
/// whether the machine, not the software, made that run's tail.
pub fn machine_steal_ticks() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    line.split_whitespace().nth(7)?.parse().ok()
}

/// Nanoseconds a task waited on a run queue, ready but not running, and how many times it was given the CPU: the
/// second and third values of `/proc/PID/schedstat` (its main thread: the event loop of roomcast and of Redis).
pub fn run_queue_wait(pid: u32) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let mut fields = stat.split_whitespace().skip(1);
    let waited = fields.next()?.parse().ok()?;
    let slices = fields.next()?.parse().ok()?;
    Some((waited, slices))
}

/// A process's resident set size in KiB, from `VmRSS` in `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A process's peak resident set size so far in KiB, from `VmHWM` in `/proc/PID/status`.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// One KiB figure of `/proc/PID/status`, named with its colon: `VmRSS:`, `VmHWM:` (the peak resident set size the
/// kernel saw), `VmSize:`. `None` once the process is gone (a zombie has no `Vm` lines either).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One CPU's time from `/proc/stat`, in clock ticks: (busy, steal, total). Busy is everything but idle, iowait and
/// steal; steal is time the hypervisor gave to another guest.
pub fn core_ticks(core: usize) -> Option<(u64, u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let name = format!("cpu{core}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user and nice).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    let steal = *fields.get(7)?;
    Some((total - idle - steal, steal, total))
}

/// CPU use between two readings, in percent of one core; `None` if either reading failed.
pub fn cpu_percent(before: Option<u64>, after: Option<u64>, seconds: f64) -> Option<f64> {
    let ticks = after?.checked_sub(before?)?;
    (seconds > 0.0).then(|| ticks as f64 / TICKS_PER_SEC / seconds * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut previous = 0;
        for value in (0..100_000u64).chain([1 << 40, u64::MAX / 3]) {
            let index = bucket_of(value);
            assert!(index >= previous, "bucket order at {value}");
            previous = index;
            let low = bucket_low(index);
            let high = bucket_low(index + 1);
            assert!(
                low <= value && value < high.max(low + 1),
                "{value} in [{low}, {high})"
            );
            assert!((high - low) as f64 <= (low as f64 / 32.0).max(1.0));
        }
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(h.quantile(1.0), 10_000_000);
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_ticks(None).is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
        let (busy, steal, total) = core_ticks(0).expect("cpu0 in /proc/stat");
        assert!(busy + steal <= total && total > 0);
        // The peak read after the current size is at least that size: VmHWM never goes down.
        let rss = rss_kib(std::process::id()).unwrap_or(u64::MAX);
        let hwm = status_kib(std::process::id(), "VmHWM:").unwrap_or(0);
        assert!(hwm >= rss, "VmHWM {hwm} KiB under VmRSS {rss} KiB");
    }
}
