//! CPU time and peak memory of the processes under test, read from /proc.
//! Each named process is measured with its descendants, so a launcher that
//! forks the real server still gets the server's figures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The processes the report names: `api`, `workers`, `temporal`, `paysim`.
/// A name with a dot (`api.1`, `workers.order.2`: the scaled topology's
/// processes) is reported under the part before it, summed over its group.
#[derive(Debug, Default)]
pub struct Watched {
    procs: Vec<(String, u32)>,
    /// The last CPU ticks and peak memory read of each process: a process
    /// killed on purpose keeps counting what it had used.
    seen: Mutex<HashMap<u32, (u64, u64)>>,
    /// Processes killed on purpose (not a crash).
    killed: Mutex<HashSet<u32>>,
}

/// CPU seconds per watched process at one instant.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot(pub BTreeMap<String, f64>);

impl Watched {
    /// Parses `name=pid,name=pid` (as scripts/bench.sh passes in `BENCH_PIDS`).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut procs = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, pid) = part
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("BENCH_PIDS entry {part:?} is not name=pid"))?;
            let pid: u32 = pid
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("BENCH_PIDS entry {part:?}: {pid:?} is not a pid"))?;
            let name = name.trim().to_string();
            if procs.iter().any(|(n, _)| *n == name) {
                anyhow::bail!("BENCH_PIDS names {name} twice");
            }
            procs.push((name, pid));
        }
        Ok(Watched {
            procs,
            ..Default::default()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Every process by its full name, in the order given.
    pub fn named(&self) -> &[(String, u32)] {
        &self.procs
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }

    /// The full name of the process with this pid.
    pub fn name_of(&self, pid: u32) -> Option<&str> {
        self.procs
            .iter()
            .find(|(_, p)| *p == pid)
            .map(|(n, _)| n.as_str())
    }

    /// Sums a figure of every process tree over the report's names.
    fn by_group(&self, figure: impl Fn(&[(u32, u32)], u32) -> f64) -> BTreeMap<String, f64> {
        let table = process_table();
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for (name, pid) in &self.procs {
            let group = name.split('.').next().unwrap_or(name);
            *out.entry(group.to_string()).or_default() += figure(&table, *pid);
        }
        out
    }

    /// Reads and remembers one process's (CPU ticks, VmHWM kB); a process gone
    /// answers what was last read of it.
    fn sample(&self, pid: u32) -> Option<(u64, u64)> {
        let mut seen = self.seen.lock().unwrap();
        match cpu_ticks(pid) {
            Some(ticks) => {
                let hwm = vm_hwm_kb(pid).unwrap_or(0);
                seen.insert(pid, (ticks, hwm));
                Some((ticks, hwm))
            }
            None => seen.get(&pid).copied(),
        }
    }

    /// CPU seconds (user + system) of every watched process tree, plus this process as `bench`.
    pub fn cpu(&self) -> CpuSnapshot {
        let mut out = self.by_group(|table, pid| {
            let ticks: u64 = tree(table, pid)
                .iter()
                .filter_map(|p| self.sample(*p))
                .map(|(t, _)| t)
                .sum();
            ticks as f64 / clock_ticks()
        });
        out.insert(
            "bench".into(),
            cpu_ticks(std::process::id()).unwrap_or(0) as f64 / clock_ticks(),
        );
        CpuSnapshot(out)
    }

    /// Peak resident memory (VmHWM) in MiB of every watched process tree, summed over the tree.
    pub fn peak_rss_mb(&self) -> BTreeMap<String, f64> {
        let mut out = self.by_group(|table, pid| {
            let kb: u64 = tree(table, pid)
                .iter()
                .filter_map(|p| self.sample(*p))
                .map(|(_, kb)| kb)
                .sum();
            kb as f64 / 1024.0
        });
        if let Some(kb) = vm_hwm_kb(std::process::id()) {
            out.insert("bench".into(), kb as f64 / 1024.0);
        }
        out
    }

    /// Names whose process has gone away without being killed on purpose (a
    /// crash mid-run invalidates the figures).
    pub fn dead(&self) -> Vec<String> {
        let killed = self.killed.lock().unwrap();
        self.procs
            .iter()
            .filter(|(_, pid)| !killed.contains(pid) && !running(*pid))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// SIGKILLs the named process and its descendants, as a crash would, after
    /// reading what they had used; waits (up to 15 s) until they are gone.
    pub async fn kill(&self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .pid(name)
            .ok_or_else(|| anyhow::anyhow!("no process named {name}"))?;
        let table = process_table();
        for p in tree(&table, pid) {
            self.sample(p);
        }
        self.killed.lock().unwrap().insert(pid);
        let pids = sigkill_tree(pid);
        let deadline = Instant::now() + Duration::from_secs(15);
        while pids.iter().any(|p| running(*p)) {
            if Instant::now() > deadline {
                anyhow::bail!("{name} (pid {pid}) still running 15 s after SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
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

/// Sends SIGKILL to `root` and every process descended from it; returns their pids.
pub fn sigkill_tree(root: u32) -> Vec<u32> {
    let pids = process_tree(root);
    for pid in &pids {
        // SAFETY: kill(2) on pids read from /proc; a pid gone meanwhile is ESRCH.
        unsafe {
            libc::kill(*pid as i32, libc::SIGKILL);
        }
    }
    pids
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
    status_kb(pid, "VmHWM:")
}

/// Resident memory (VmRSS) of one process now, in MiB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    status_kb(pid, "VmRSS:").map(|kb| kb as f64 / 1024.0)
}

/// A `kB` figure of /proc/<pid>/status.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
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
        let names: Vec<&str> = w.named().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["api", "workers", "temporal"]);
        assert_eq!(w.name_of(11), Some("workers"));
        assert!(Watched::parse("api").is_err());
        assert!(Watched::parse("api=1,api=2").is_err());
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

    #[test]
    fn groups_dotted_names_and_remembers_a_killed_process() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let w = Watched::parse(&format!("api.1={me},api.2={}", child.id())).unwrap();
        let before = w.cpu();
        assert!(before.0.contains_key("api") && !before.0.contains_key("api.1"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // A zombie is gone for `running`; reap it in the background.
        let reaper = std::thread::spawn(move || child.wait());
        rt.block_on(w.kill("api.2")).unwrap();
        reaper.join().unwrap().unwrap();
        assert!(w.dead().is_empty(), "killed on purpose is not a crash");
        assert!(w.cpu().0["api"] >= before.0["api"]);
        assert!(w.peak_rss_mb()["api"] > 0.0);
    }
}
