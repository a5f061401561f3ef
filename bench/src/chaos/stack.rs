//! The stack's processes as real OS processes: scripts/chaos.sh starts them
//! (scripts/lib.sh's start_temporal_dev and start_stack) and passes their pids;
//! this kills one with SIGKILL, as a crash would, and starts it again exactly as
//! it was started — the same executable, arguments, environment and working
//! directory, read from /proc — so the same port, state file and settings.

use crate::procs;
use anyhow::{Context as _, bail};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn progress_note(msg: &str) {
    eprintln!("[chaos] {msg}");
}

/// How to start a process again.
struct Recipe {
    exe: PathBuf,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
}

impl Recipe {
    fn read(pid: u32) -> anyhow::Result<Self> {
        let split = |raw: Vec<u8>| -> Vec<OsString> {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| OsString::from_vec(s.to_vec()))
                .collect()
        };
        let argv = split(std::fs::read(format!("/proc/{pid}/cmdline"))?);
        let env = split(std::fs::read(format!("/proc/{pid}/environ"))?)
            .into_iter()
            .filter_map(|kv| {
                let b = kv.into_vec();
                let eq = b.iter().position(|c| *c == b'=')?;
                Some((
                    OsString::from_vec(b[..eq].to_vec()),
                    OsString::from_vec(b[eq + 1..].to_vec()),
                ))
            })
            .collect();
        let mut exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
        // A binary replaced on disk while running reads as "<path> (deleted)".
        if let Some(s) = exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            exe = PathBuf::from(s);
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))?;
        if argv.is_empty() {
            bail!("process {pid} has no command line (exited?)");
        }
        Ok(Recipe {
            exe,
            argv,
            env,
            cwd,
        })
    }
}

/// How to tell the restarted process is ready.
#[derive(Clone)]
pub enum Ready {
    /// `GET <url>` answers 200.
    Http(String),
    /// Something listens on this address.
    Listening(String),
    /// Still running after this long.
    Alive(Duration),
}

struct Proc {
    name: String,
    pid: u32,
    recipe: Recipe,
    ready: Ready,
    /// Set once this run started it (then it is ours to reap and stop).
    child: Option<Child>,
    /// May be restarted when found dead (paysim may not: its ledger is in memory).
    restartable: bool,
}

/// One injected fault, as it went.
#[derive(Debug, Clone)]
pub struct FaultLog {
    pub what: String,
    pub at_s: f64,
    pub down_s: f64,
    pub ok: bool,
    pub note: String,
}

pub struct Stack {
    procs: Mutex<Vec<Proc>>,
    logs: PathBuf,
    started: Instant,
    /// Names being killed on purpose right now (the monitor leaves them alone).
    down: Mutex<Vec<String>>,
    pub faults: Mutex<Vec<FaultLog>>,
    /// Processes that exited without being killed, with when.
    pub unexpected: Mutex<Vec<String>>,
}

impl Stack {
    /// Adopts the processes named in `name=pid,…`, with how each shows it is ready.
    pub fn adopt(pids: &str, ready: impl Fn(&str) -> Ready, logs: PathBuf) -> anyhow::Result<Self> {
        let mut procs_ = Vec::new();
        for part in pids.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, pid) = part
                .split_once('=')
                .with_context(|| format!("CHAOS_PIDS entry {part:?} is not name=pid"))?;
            let pid: u32 = pid
                .trim()
                .parse()
                .with_context(|| format!("CHAOS_PIDS entry {part:?}"))?;
            if !procs::running(pid) {
                bail!("{name} (pid {pid}) is not running");
            }
            let recipe =
                Recipe::read(pid).with_context(|| format!("reading how {name} was started"))?;
            procs_.push(Proc {
                name: name.trim().to_string(),
                pid,
                recipe,
                ready: ready(name.trim()),
                child: None,
                restartable: name.trim() != "paysim",
            });
        }
        std::fs::create_dir_all(&logs)?;
        Ok(Stack {
            procs: Mutex::new(procs_),
            logs,
            started: Instant::now(),
            down: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            unexpected: Mutex::new(Vec::new()),
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.procs
            .lock()
            .unwrap()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.procs.lock().unwrap().iter().any(|p| p.name == name)
    }

    /// SIGKILLs `name` (and anything it started), leaves it down for `down`,
    /// starts it again as it was and waits until it is ready.
    pub async fn crash(&self, name: &str, down: Duration) -> FaultLog {
        let at = self.started.elapsed().as_secs_f64();
        self.down.lock().unwrap().push(name.to_string());
        let t0 = Instant::now();
        let result = async {
            self.kill(name).await?;
            tokio::time::sleep(down).await;
            // A server may still find its state file locked for a moment and
            // exit: start it again, a few times, as an operator would.
            let mut attempt = 1;
            loop {
                self.start(name)?;
                match self.wait_ready(name).await {
                    Ok(()) => return Ok(()),
                    Err(e) if attempt < 3 && !self.is_running(name) => {
                        self.reap(name);
                        progress_note(&format!(
                            "{name} exited on start ({e:#}); starting it again"
                        ));
                        attempt += 1;
                        tokio::time::sleep(Duration::from_secs(attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        .await;
        self.down.lock().unwrap().retain(|n| n != name);
        let log = FaultLog {
            what: format!("SIGKILL {name}, restart"),
            at_s: at,
            down_s: t0.elapsed().as_secs_f64(),
            ok: result.is_ok(),
            note: result.err().map(|e| format!("{e:#}")).unwrap_or_default(),
        };
        self.faults.lock().unwrap().push(log.clone());
        log
    }

    fn is_running(&self, name: &str) -> bool {
        self.procs
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.name == name)
            .is_some_and(|p| procs::running(p.pid))
    }

    async fn kill(&self, name: &str) -> anyhow::Result<()> {
        let pids = {
            let p = self.procs.lock().unwrap();
            let p = p
                .iter()
                .find(|p| p.name == name)
                .with_context(|| format!("no process named {name}"))?;
            procs::sigkill_tree(p.pid)
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            self.reap(name);
            if pids.iter().all(|p| !procs::running(*p)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} still running 15 s after SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Collects the exit status of our own child, so it does not linger as a zombie.
    fn reap(&self, name: &str) {
        let mut procs_ = self.procs.lock().unwrap();
        if let Some(p) = procs_.iter_mut().find(|p| p.name == name)
            && let Some(c) = p.child.as_mut()
            && let Ok(Some(_)) = c.try_wait()
        {
            p.child = None;
        }
    }

    fn start(&self, name: &str) -> anyhow::Result<()> {
        let mut procs_ = self.procs.lock().unwrap();
        let p = procs_
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no process named {name}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{name}.log")))?;
        let r = &p.recipe;
        let mut cmd = Command::new(&r.exe);
        cmd.arg0(&r.argv[0])
            .args(&r.argv[1..])
            .env_clear()
            .envs(r.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&r.cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. The process dies with this run,
        // even if the run itself is killed (the runtime's threads live as long).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} again", r.exe.display()))?;
        p.pid = child.id();
        p.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self, name: &str) -> anyhow::Result<()> {
        let (ready, pid) = {
            let p = self.procs.lock().unwrap();
            let p = p.iter().find(|p| p.name == name).context("gone")?;
            (p.ready.clone(), p.pid)
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if !procs::running(pid) {
                bail!("{name} exited right after starting again (see its log)");
            }
            let up = match &ready {
                Ready::Http(url) => http
                    .get(url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success()),
                Ready::Listening(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                Ready::Alive(d) => {
                    tokio::time::sleep(*d).await;
                    procs::running(pid)
                }
            };
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} not ready 90 s after starting again");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Looks once at every process not being killed on purpose: one that died on
    /// its own is recorded and (unless it holds state only in memory) started again.
    pub async fn watch_once(&self) {
        let dead: Vec<(String, bool)> = {
            let down = self.down.lock().unwrap().clone();
            let procs_ = self.procs.lock().unwrap();
            procs_
                .iter()
                .filter(|p| !down.contains(&p.name) && !procs::running(p.pid))
                .map(|p| (p.name.clone(), p.restartable))
                .collect()
        };
        for (name, restartable) in dead {
            self.reap(&name);
            let at = self.started.elapsed().as_secs_f64();
            self.unexpected.lock().unwrap().push(format!(
                "{name} exited on its own at {at:.1} s{}",
                if restartable {
                    "; started again"
                } else {
                    "; not restartable"
                }
            ));
            if restartable {
                self.down.lock().unwrap().push(name.clone());
                let r = match self.start(&name) {
                    Ok(()) => self.wait_ready(&name).await,
                    Err(e) => Err(e),
                };
                self.down.lock().unwrap().retain(|n| n != &name);
                if let Err(e) = r {
                    self.unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{name} could not be started again: {e:#}"));
                }
            } else {
                // Record it once: treat it as down from now on.
                self.down.lock().unwrap().push(name);
            }
        }
    }

    /// Stops what this run started (the script stops what it started), workers
    /// and API before the Temporal server: SIGTERM, then SIGKILL after 10 s.
    pub fn stop_own(&self) {
        let mut procs_ = self.procs.lock().unwrap();
        let rank = |n: &str| match n {
            "worker" => 0,
            "api" => 1,
            "temporal" => 3,
            _ => 2,
        };
        procs_.sort_by_key(|p| rank(&p.name));
        for p in procs_.iter_mut() {
            let Some(c) = p.child.as_mut() else { continue };
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = c.try_wait() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            p.child = None;
        }
    }
}
