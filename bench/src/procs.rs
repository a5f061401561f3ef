//! CPU time and peak memory of the processes under test, read from /proc.
//! Each named process is measured with its descendants, so a launcher that
//! forks the real server still gets the server's figures.

use std::collections::BTreeMap;
use std::fs;

/// The processes the report names: `api`, `workers`, `temporal`, `paysim`.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    pids: BTreeMap<String, u32>,
}

/// CPU seconds per watched process at one instant.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot(pub BTreeMap<String, f64>);

impl Watched {
    /// Parses `name=pid,name=pid` (as scripts/bench.sh passes in `BENCH_PIDS`).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut pids = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, pid) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("BENCH_PIDS entry {part:?} is not name=pid"))?;
            let pid: u32 = pid
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("BENCH_PIDS entry {part:?}: {pid:?} is not a pid"))?;
            pids.insert(name.trim().to_string(), pid);
        }
        Ok(Watched { pids })
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// CPU seconds (user + system) of every watched process tree, plus this process as `bench`.
    pub fn cpu(&self) -> CpuSnapshot {
        let table = process_table();
        let mut out: BTreeMap<String, f64> = self
            .pids
            .iter()
            .map(|(name, &pid)| {
                let ticks: u64 = tree(&table, pid).iter().filter_map(|p| cpu_ticks(*p)).sum();
                (name.clone(), ticks as f64 / clock_ticks())
            })
            .collect();
        out.insert(
            "bench".into(),
            cpu_ticks(std::process::id()).unwrap_or(0) as f64 / clock_ticks(),
        );
        CpuSnapshot(out)
    }

    /// Peak resident memory (VmHWM) in MiB of every watched process tree, summed over the tree.
    pub fn peak_rss_mb(&self) -> BTreeMap<String, f64> {
        let table = process_table();
        let mut out: BTreeMap<String, f64> = self
            .pids
            .iter()
            .map(|(name, &pid)| {
                let kb: u64 = tree(&table, pid).iter().filter_map(|p| vm_hwm_kb(*p)).sum();
                (name.clone(), kb as f64 / 1024.0)
            })
            .collect();
        if let Some(kb) = vm_hwm_kb(std::process::id()) {
            out.insert("bench".into(), kb as f64 / 1024.0);
        }
        out
    }

    /// Names whose process has gone away (a crash mid-run invalidates the figures).
    pub fn dead(&self) -> Vec<String> {
        self.pids
            .iter()
            .filter(|(_, pid)| cpu_ticks(**pid).is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl CpuSnapshot {
    /// Seconds spent between `earlier` and `self`, by name.
    pub fn since(&self, earlier: &CpuSnapshot) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.0.get(k).copied().unwrap_or(0.0)))
            .collect()
    }
}

/// `root` and every process descended from it, parents first (the chaos run
/// kills a process with whatever it started).
#[allow(dead_code)]
pub fn process_tree(root: u32) -> Vec<u32> {
    tree(&process_table(), root)
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
#[allow(dead_code)]
pub fn running(pid: u32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().cloned())
        .is_some_and(|state| state != "Z" && state != "X")
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (pid, parent pid) of every process.
fn process_table() -> Vec<(u32, u32)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?.get(1)?.parse().ok()?)))
        .collect()
}

fn tree(table: &[(u32, u32)], root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            table
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// Fields of /proc/<pid>/stat after the command name, starting with the state
/// (field 3), so field N of proc(5) is at index N - 3.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; it ends at the last ')'.
    let rest = &raw[raw.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(14 - 3)?.parse().ok()?;
    let stime: u64 = f.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pid_list_and_refuses_garbage() {
        let w = Watched::parse("api=10, workers=11,temporal=12").unwrap();
        assert_eq!(
            w.pids.keys().collect::<Vec<_>>(),
            ["api", "temporal", "workers"]
        );
        assert!(Watched::parse("api").is_err());
        assert!(Watched::parse("api=x").is_err());
        assert!(Watched::parse("").unwrap().is_empty());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(vm_hwm_kb(me).unwrap() > 0);
        assert!(running(me));
        assert_eq!(process_tree(me)[0], me);
        let w = Watched::parse(&format!("self={me}")).unwrap();
        assert!(w.dead().is_empty());
        assert!(w.peak_rss_mb()["self"] > 0.0);
    }
}
