//! Memory that is asked for before it is taken.
//!
//! Stable Rust aborts the process when an allocation fails (`handle_alloc_error`), and
//! `catch_unwind` does not catch it: a network or a dense curvature too large for the machine
//! used to end `hypergrad` with exit 134 and a Python interpreter with SIGABRT. Two guards:
//!
//! * [`MemoryPlan`]: a run states the large buffers it will hold and is refused, before it
//!   allocates any, when their sum exceeds what the process may really use
//!   ([`available_host_bytes`]: `MemAvailable`, and the cgroup's limit less its usage). With
//!   Linux's default overcommit a large allocation "succeeds" and the kernel kills the process
//!   later, when the pages are touched, so the address space is not the measure;
//! * [`try_vec`]: the host buffers of the CPU backend (and `w₀` of a network) are reserved
//!   with `try_reserve_exact`, so an allocation the allocator refuses is an error naming its
//!   size, not an abort.

use crate::error::{Error, Result};

/// Bytes the process may still allocate on the host: the smaller of `/proc/meminfo`'s
/// `MemAvailable` and the cgroup's limit less its current usage (cgroup v2 `memory.max` and
/// `memory.current`, or v1 `memory.limit_in_bytes` and `memory.usage_in_bytes`). `None` where
/// neither can be read (not Linux): then only [`try_vec`] guards.
pub fn available_host_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_available(&text));
    let cgroup = cgroup_room();
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// The cgroup's limit less its usage, for the cgroup this process is in (v2, then v1).
fn cgroup_room() -> Option<u64> {
    let read =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let pairs = [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ];
    // "max" (v2's no limit) does not parse, and v1's no limit is a huge number: both are
    // no constraint.
    pairs.iter().find_map(|(limit, usage)| {
        let limit = read(limit).filter(|&l| l < (1 << 60))?;
        Some(limit.saturating_sub(read(usage).unwrap_or(0)))
    })
}

/// `len` copies of `value`, or an [`Error::Memory`] naming `what` and the bytes when the
/// allocator refuses (instead of aborting the process).
pub fn try_vec<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    reserve(&mut v, len, what)?;
    v.resize(len, value);
    Ok(v)
}

/// Reserves room for `len` entries in `v` (see [`try_vec`]).
pub fn reserve<T>(v: &mut Vec<T>, len: usize, what: &str) -> Result<()> {
    v.try_reserve_exact(len).map_err(|_| {
        let bytes = (len as u128) * (std::mem::size_of::<T>() as u128);
        Error::Memory(format!(
            "cannot allocate {} for {what}{}",
            human(bytes.min(u64::MAX as u128) as u64),
            available_host_bytes()
                .map(|a| format!(" ({} available on the host)", human(a)))
                .unwrap_or_default()
        ))
    })
}

/// The large buffers a run will hold, each with what it is, and the option that lowers the
/// largest.
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    needs: Vec<Need>,
}

#[derive(Clone, Debug)]
struct Need {
    what: String,
    bytes: u64,
    /// The option (and value) that makes this buffer smaller, in the CLI's spelling.
    lower: &'static str,
}

impl MemoryPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `count` buffers of `entries` values of `bytes_per_entry` bytes each (saturating:
    /// sizes past u64 are simply "too large").
    pub fn add(
        &mut self,
        what: impl Into<String>,
        count: u64,
        entries: u64,
        bytes_per_entry: u64,
        lower: &'static str,
    ) -> &mut Self {
        let bytes = count
            .saturating_mul(entries)
            .saturating_mul(bytes_per_entry);
        self.needs.push(Need {
            what: what.into(),
            bytes,
            lower,
        });
        self
    }

    /// The bytes of all the buffers.
    pub fn total(&self) -> u64 {
        self.needs
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(n.bytes))
    }

    /// Refuses the plan, in one line, when it needs more than `available` bytes of host
    /// memory (nothing is checked when `available` is `None`): the total, the largest
    /// buffers, what is available, and the option that lowers the largest.
    pub fn check(&self, available: Option<u64>, place: &str) -> Result<()> {
        let (Some(available), total) = (available, self.total()) else {
            return Ok(());
        };
        if total <= available {
            return Ok(());
        }
        let mut needs: Vec<&Need> = self.needs.iter().filter(|n| n.bytes > 0).collect();
        needs.sort_by_key(|n| std::cmp::Reverse(n.bytes));
        let largest: Vec<String> = needs
            .iter()
            .take(3)
            .map(|n| format!("{} {}", n.what, human(n.bytes)))
            .collect();
        let lower = needs.first().map_or("", |n| n.lower);
        Err(Error::Memory(format!(
            "the run needs about {} of {place} memory ({}) and {} is available: lower it with {lower}",
            human(total),
            largest.join(", "),
            human(available)
        )))
    }
}

/// `bytes` in the largest unit that keeps a number ≥ 1 (B, KB, … EB; powers of 10).
pub fn human(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "more than 18 EB".into(); // a saturated count: past what any machine holds
    }
    const UNITS: [&str; 7] = ["B", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_reads_kib() {
        let text = "MemTotal:  100 kB\nMemFree: 5 kB\nMemAvailable:    8865228 kB\n";
        assert_eq!(mem_available(text), Some(8_865_228 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn a_plan_over_the_limit_names_the_largest_buffer_and_its_option() {
        let mut plan = MemoryPlan::new();
        plan.add(
            "dense curvature (P×P)",
            2,
            50_000 * 50_000,
            4,
            "--curvature kfac",
        )
        .add("rows", 1, 1_000_000, 8, "--precision f32");
        assert!(plan.check(Some(u64::MAX), "host").is_ok());
        assert!(plan.check(None, "host").is_ok());
        let e = plan
            .check(Some(8_000_000_000), "host")
            .unwrap_err()
            .to_string();
        assert!(e.contains("20.0 GB") && e.contains("8.0 GB"), "{e}");
        assert!(e.contains("dense curvature (P×P) 20.0 GB"), "{e}");
        assert!(e.ends_with("--curvature kfac") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn sizes_past_u64_saturate_instead_of_wrapping() {
        let mut plan = MemoryPlan::new();
        plan.add("huge", u64::MAX, u64::MAX, 8, "--model");
        assert_eq!(plan.total(), u64::MAX);
        assert!(plan.check(Some(1 << 40), "host").is_err());
    }

    #[test]
    fn a_refused_allocation_is_an_error_not_an_abort() {
        // More than any address space: the allocator refuses at once.
        let e = try_vec(usize::MAX / 8, 0.0f64, "a test buffer").unwrap_err();
        let message = e.to_string();
        assert!(message.contains("a test buffer"), "{message}");
        assert!(matches!(e, Error::Memory(_)));
        assert_eq!(try_vec(3, 1u8, "three bytes").unwrap(), vec![1, 1, 1]);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(60_000_000_080), "60.0 GB");
        assert_eq!(human(u64::MAX), "more than 18 EB");
    }
}
