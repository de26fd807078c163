//! CPU and RSS of the processes under test, from /proc (Linux only): utime+stime of
//! /proc/<pid>/stat and VmRSS of /proc/<pid>/status, sampled every 250 ms.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Watched {
    pub pid: u32,
    pub name: String,
}

/// What one process did over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcStats {
    pub pid: u32,
    pub name: String,
    /// CPU seconds (user + system) used during the run.
    pub cpu_seconds: f64,
    /// Average CPU over the run, in percent of one core.
    pub cpu_percent_avg: f64,
    /// Highest CPU over one sampling interval, percent of one core.
    pub cpu_percent_peak: f64,
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    pub rss_peak_kb: u64,
    /// False when the process could no longer be read at the end (it exited).
    pub alive_at_end: bool,
}

struct Track {
    start_ticks: u64,
    last_ticks: u64,
    last_at: Instant,
    peak_percent: f64,
    rss_start: u64,
    rss_end: u64,
    rss_peak: u64,
    alive: bool,
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime in clock ticks, and the parent pid.
fn read_stat(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

fn read_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

/// Finds the processes under test: `muster` processes (preferring those whose command line
/// names `hint`, e.g. the intake port) and the `nats-server` they started (else any).
pub fn discover(hint: &str) -> Vec<Watched> {
    let mut musters = Vec::new();
    let mut nats = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        match comm(pid).as_deref() {
            Some("muster") => musters.push(pid),
            Some("nats-server") => nats.push(pid),
            _ => {}
        }
    }
    if musters.len() > 1 && !hint.is_empty() {
        let matching: Vec<u32> = musters
            .iter()
            .copied()
            .filter(|pid| cmdline(*pid).contains(hint))
            .collect();
        if !matching.is_empty() {
            musters = matching;
        }
    }
    if !musters.is_empty() {
        let children: Vec<u32> = nats
            .iter()
            .copied()
            .filter(|pid| read_stat(*pid).is_some_and(|(_, ppid)| musters.contains(&ppid)))
            .collect();
        if !children.is_empty() {
            nats = children;
        }
    }
    let mut found: Vec<Watched> = musters
        .into_iter()
        .map(|pid| Watched {
            pid,
            name: "muster".into(),
        })
        .collect();
    found.extend(nats.into_iter().map(|pid| Watched {
        pid,
        name: "nats-server".into(),
    }));
    found
}

/// From `--pids 123,456`: names from /proc.
pub fn from_pids(pids: &[u32]) -> Vec<Watched> {
    pids.iter()
        .map(|pid| Watched {
            pid: *pid,
            name: comm(*pid).unwrap_or_else(|| "?".into()),
        })
        .collect()
}

/// Samples the watched processes (and this one) until stopped.
pub struct Sampler {
    state: Arc<Mutex<BTreeMap<u32, (Watched, Track)>>>,
    started: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(mut watched: Vec<Watched>) -> Sampler {
        watched.push(Watched {
            pid: std::process::id(),
            name: "muster-bench (self)".into(),
        });
        let now = Instant::now();
        let mut map = BTreeMap::new();
        for w in watched {
            let ticks = read_stat(w.pid).map(|s| s.0).unwrap_or(0);
            let rss = read_rss_kb(w.pid).unwrap_or(0);
            map.insert(
                w.pid,
                (
                    w,
                    Track {
                        start_ticks: ticks,
                        last_ticks: ticks,
                        last_at: now,
                        peak_percent: 0.0,
                        rss_start: rss,
                        rss_end: rss,
                        rss_peak: rss,
                        alive: true,
                    },
                ),
            );
        }
        let state = Arc::new(Mutex::new(map));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = {
            let state = state.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let hz = clock_ticks_per_second();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    sample(&state, hz);
                }
            })
        };
        Sampler {
            state,
            started: now,
            stop,
            task: Some(task),
        }
    }

    pub async fn finish(mut self) -> Vec<ProcStats> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let hz = clock_ticks_per_second();
        sample(&self.state, hz);
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let state = self.state.lock().expect("sampler lock");
        state
            .values()
            .map(|(w, t)| {
                let cpu = (t.last_ticks.saturating_sub(t.start_ticks)) as f64 / hz;
                ProcStats {
                    pid: w.pid,
                    name: w.name.clone(),
                    cpu_seconds: cpu,
                    cpu_percent_avg: 100.0 * cpu / wall,
                    cpu_percent_peak: t.peak_percent,
                    rss_start_kb: t.rss_start,
                    rss_end_kb: t.rss_end,
                    rss_peak_kb: t.rss_peak,
                    alive_at_end: t.alive,
                }
            })
            .collect()
    }
}

fn sample(state: &Mutex<BTreeMap<u32, (Watched, Track)>>, hz: f64) {
    let now = Instant::now();
    let mut state = state.lock().expect("sampler lock");
    for (pid, (_, t)) in state.iter_mut() {
        match (read_stat(*pid), read_rss_kb(*pid)) {
            (Some((ticks, _)), Some(rss)) => {
                let dt = now.duration_since(t.last_at).as_secs_f64();
                if dt > 0.1 {
                    let percent = 100.0 * (ticks.saturating_sub(t.last_ticks)) as f64 / hz / dt;
                    t.peak_percent = t.peak_percent.max(percent);
                    t.last_ticks = ticks;
                    t.last_at = now;
                }
                t.rss_end = rss;
                t.rss_peak = t.rss_peak.max(rss);
            }
            _ => t.alive = false,
        }
    }
}
