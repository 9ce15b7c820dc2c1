//! Runs one level: warmup, metrics scrape, the measured phase with a progress bar, scrape again.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;

use super::result::{LevelResult, LevelSpec, Phase};
use super::schedule::Schedule;
use super::server_metrics::{diff, Snapshot};
use super::stats::Recorder;
use super::{BenchConfig, Load, Stop, Workload};
use crate::target::{Connection, Target};
use crate::{ClientError, Protocol};

/// Counters every request task updates.
#[derive(Default)]
struct Live {
    recorder: Mutex<Recorder>,
    done: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Open loop: the latest a request was sent after its due time, in microseconds.
    max_lag_us: AtomicU64,
}

impl Live {
    fn start(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    fn finish(&self, result: Result<(), &ClientError>, latency: Duration) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut recorder = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => recorder.ok(latency),
            Err(e) => {
                recorder.error(e);
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(recorder);
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends one request and records it; `since` is when its latency starts (the open loop's due time).
async fn one(target: &Target, work: &Workload, n: u64, since: Instant, live: &Live) {
    let images = work.images_for(n);
    live.start();
    let result = target.infer(work.task, &work.model, &images, &work.params).await;
    live.finish(result.as_ref().map(|_| ()), since.elapsed());
}

/// The senders of a level: one shared target, or for the gRPC stream one stream per closed-loop
/// worker (each stream answers in order, so sharing one would serialise the workers).
async fn targets(conn: &Connection, config: &BenchConfig, load: Load) -> Result<Vec<Target>, ClientError> {
    let count = match (config.protocol, load) {
        (Protocol::GrpcStream, Load::Closed { concurrency }) => concurrency.max(1),
        _ => 1,
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(conn.target(config.protocol, config.workload.task).await?);
    }
    Ok(out)
}

async fn phase(targets: &[Target], work: &Arc<Workload>, load: Load, stop: Stop, bar: Option<ProgressBar>) -> Phase {
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let ticker = bar.map(|bar| tokio::spawn(tick(bar, live.clone(), stop, started)));
    let mut tasks = JoinSet::new();
    match load {
        Load::Closed { concurrency } => {
            let deadline = match stop {
                Stop::Duration(d) => Some(started + d),
                Stop::Requests(_) => None,
            };
            let limit = match stop {
                Stop::Requests(n) => Some(n),
                Stop::Duration(_) => None,
            };
            let tickets = Arc::new(AtomicU64::new(0));
            for worker in 0..concurrency.max(1) {
                let (target, work, live, tickets) =
                    (targets[worker % targets.len()].clone(), work.clone(), live.clone(), tickets.clone());
                tasks.spawn(async move {
                    loop {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            break;
                        }
                        let n = tickets.fetch_add(1, Ordering::Relaxed);
                        if limit.is_some_and(|limit| n >= limit) {
                            break;
                        }
                        one(&target, &work, n, Instant::now(), &live).await;
                    }
                });
            }
        }
        Load::Open { rate, arrivals } => {
            // `Schedule::new` only fails for a bad rate, which the caller has checked.
            let schedule = Schedule::new(rate, arrivals).unwrap_or_else(|_| unreachable!("rate checked"));
            for (n, offset) in schedule.enumerate() {
                let n = n as u64;
                match stop {
                    Stop::Requests(limit) if n >= limit => break,
                    Stop::Duration(d) if offset >= d => break,
                    _ => {}
                }
                let due = started + offset;
                tokio::time::sleep_until(due.into()).await;
                let lag = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                live.max_lag_us.fetch_max(lag, Ordering::Relaxed);
                let (target, work, live) = (targets[0].clone(), work.clone(), live.clone());
                // Latency counts from the due time: a late send is the server's delay too.
                tasks.spawn(async move { one(&target, &work, n, due, &live).await });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed_s = started.elapsed().as_secs_f64();
    if let Some(ticker) = ticker {
        ticker.abort();
        let _ = ticker.await;
    }
    let live = Arc::try_unwrap(live).unwrap_or_else(|_| unreachable!("every task has finished"));
    Phase {
        recorder: live.recorder.into_inner().unwrap_or_else(|e| e.into_inner()),
        elapsed_s,
        max_in_flight: live.max_in_flight.into_inner(),
        max_send_lag_ms: matches!(load, Load::Open { .. }).then(|| live.max_lag_us.into_inner() as f64 / 1e3),
    }
}

/// Redraws the progress bar five times a second until aborted.
async fn tick(bar: ProgressBar, live: Arc<Live>, stop: Stop, started: Instant) {
    loop {
        let done = live.done.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        match stop {
            Stop::Requests(_) => bar.set_position(done),
            Stop::Duration(_) => bar.set_position(started.elapsed().as_millis() as u64),
        }
        bar.set_message(format!(
            "{done} answered, {errors} failed, {:.1} req/s, {} in flight",
            done as f64 / secs,
            live.in_flight.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn progress_bar(stop: Stop, label: &str) -> ProgressBar {
    let (length, template) = match stop {
        Stop::Requests(n) => (n, "{prefix} [{bar:30}] {pos}/{len} {msg}"),
        Stop::Duration(d) => (d.as_millis() as u64, "{prefix} [{bar:30}] {elapsed}/{duration} {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// Runs one level of `config` at `load`: warmup, then the measured phase between two scrapes of
/// the server's metrics (skipped with a note on stderr when `/metrics` cannot be read).
pub async fn run_level(conn: &Connection, config: &BenchConfig, load: Load) -> Result<LevelResult, ClientError> {
    if let Load::Open { rate, .. } = load {
        Schedule::new(rate, super::Arrivals::Uniform).map_err(ClientError::Input)?;
    }
    let targets = targets(conn, config, load).await?;
    let work = Arc::new(config.workload.clone());
    let warmup = if config.warmup > Duration::ZERO {
        Some(phase(&targets, &work, load, Stop::Duration(config.warmup), None).await)
    } else {
        None
    };
    let scrape = || async { conn.rest.metrics().await.map(|text| Snapshot::of(&text, &work.model)) };
    let before = scrape().await;
    let spec = LevelSpec {
        protocol: config.protocol,
        concurrency: match load {
            Load::Closed { concurrency } => Some(concurrency.max(1)),
            Load::Open { .. } => None,
        },
        rate: match load {
            Load::Open { rate, .. } => Some(rate),
            Load::Closed { .. } => None,
        },
        images_per_request: work.images_per_request.max(1),
    };
    let label = match load {
        Load::Closed { concurrency } => format!("c={concurrency}"),
        Load::Open { rate, .. } => format!("r={rate}/s"),
    };
    let use_bar = config.progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = use_bar.then(|| progress_bar(config.stop, &label));
    let measured = phase(&targets, &work, load, config.stop, bar.clone()).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let server = match (before, scrape().await) {
        (Ok(before), Ok(after)) => Some(diff(&before, &after)),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("note: server metrics not available ({e}); reporting the client's figures only");
            None
        }
    };
    Ok(LevelResult::new(spec, &measured, server, warmup.as_ref()))
}

/// Runs every level of `config` in order, calling `each` as each one finishes.
pub async fn run_all(
    conn: &Connection,
    config: &BenchConfig,
    mut each: impl FnMut(&LevelResult),
) -> Result<Vec<LevelResult>, ClientError> {
    let mut results = Vec::with_capacity(config.loads.len());
    for &load in &config.loads {
        let result = run_level(conn, config, load).await?;
        each(&result);
        results.push(result);
    }
    Ok(results)
}
