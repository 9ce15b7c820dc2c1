//! The CI fuzz run: for every target, replay the seed corpus (each seed must be accepted) and
//! every committed crash regression, then run `CSP_FUZZ_INPUTS` (default 20000) blind mutations of
//! them, the same inputs on every machine so CI is reproducible; `CSP_FUZZ_SECONDS` runs for a time
//! instead. No input may panic; a panicking one is saved under `<target dir>/fuzz-crashes/<target>/`
//! and fails the test with its path.
//!
//! This is a smoke run, not coverage-guided fuzzing: it catches shallow crashes near the seeds.
//! The coverage-guided run is `scripts/fuzz.sh` (libFuzzer, nightly).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use csp_fuzz::mutate::Mutator;
use csp_fuzz::{target, Target, TARGETS};

const DEFAULT_INPUTS: u64 = 20_000;

/// How long each target's mutation loop runs.
enum Budget {
    Inputs(u64),
    Time(Duration),
}

impl Budget {
    fn more(&self, runs: u64, started: Instant) -> bool {
        match self {
            Budget::Inputs(n) => runs < *n,
            Budget::Time(t) => started.elapsed() < *t,
        }
    }
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Files of `dir`, sorted by name, as (path, bytes); none when it does not exist.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))))
        .collect()
}

fn budget() -> Budget {
    if let Ok(v) = std::env::var("CSP_FUZZ_SECONDS") {
        let s = v.trim().parse::<f64>().unwrap_or_else(|_| panic!("CSP_FUZZ_SECONDS must be seconds, got `{v}`"));
        return Budget::Time(Duration::from_secs_f64(s.max(0.0)));
    }
    match std::env::var("CSP_FUZZ_INPUTS") {
        Ok(v) => {
            Budget::Inputs(v.trim().parse().unwrap_or_else(|_| panic!("CSP_FUZZ_INPUTS must be a count, got `{v}`")))
        }
        Err(_) => Budget::Inputs(DEFAULT_INPUTS),
    }
}

/// Where a panicking input goes: the cargo target dir, as CI keeps it.
fn crash_dir(target: &str) -> PathBuf {
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| fuzz_dir().join("..").join("target"));
    target_dir.join("fuzz-crashes").join(target)
}

/// A stable file name from the input's content (FNV-1a), so a crash found twice is saved once.
fn content_name(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("crash-{hash:016x}")
}

/// Runs one input; on a panic saves it and fails the test naming the saved file.
fn run_one(target: &Target, input: &[u8], origin: &str) -> bool {
    match catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        Ok(accepted) => accepted,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("<non-string panic>");
            let dir = crash_dir(target.name);
            let path = dir.join(content_name(input));
            let saved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
            panic!(
                "target `{}` panicked on {origin} ({} bytes): {message}\ninput saved to {} ({saved:?}); \
                 fix the panic and commit the input under fuzz/regressions/{}/",
                target.name,
                input.len(),
                path.display(),
                target.name
            );
        }
    }
}

fn smoke(name: &str) {
    let target = target(name).unwrap_or_else(|| panic!("no target `{name}`"));
    let seeds = files(&fuzz_dir().join("corpus").join(name));
    assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seeds (cargo run -p csp-fuzz --example gen_seeds)");
    for (path, bytes) in &seeds {
        let accepted = run_one(target, bytes, &path.display().to_string());
        assert!(accepted, "seed {} is not accepted by `{name}`: seeds must be valid inputs", path.display());
    }
    let regressions = files(&fuzz_dir().join("regressions").join(name));
    for (path, bytes) in &regressions {
        run_one(target, bytes, &path.display().to_string());
    }

    let corpus: Vec<Vec<u8>> = seeds.into_iter().chain(regressions).map(|(_, b)| b).collect();
    // A fixed seed per target: the same input budget replays the same inputs anywhere.
    let seed = name.bytes().fold(0x5eed_u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut mutator = Mutator::new(seed, &corpus, target.dictionary);
    let budget = budget();
    let start = Instant::now();
    let (mut runs, mut accepted, mut slowest) = (0u64, 0u64, Duration::ZERO);
    while budget.more(runs, start) {
        let input = mutator.next_input();
        let t = Instant::now();
        accepted += u64::from(run_one(target, &input, &format!("mutated input #{runs} (seed {seed:#x})")));
        slowest = slowest.max(t.elapsed());
        runs += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz smoke `{name}`: {} seeds+regressions, {runs} mutated inputs in {secs:.1} s ({:.0}/s), {accepted} accepted, \
         slowest {:.1} ms, no panics",
        corpus.len(),
        runs as f64 / secs.max(1e-9),
        slowest.as_secs_f64() * 1e3
    );
}

#[test]
fn corpus_folders_match_targets() {
    for dir in ["corpus", "regressions"] {
        for (path, _) in std::fs::read_dir(fuzz_dir().join(dir)).into_iter().flatten().flatten().map(|e| (e.path(), ()))
        {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            assert!(target(&name).is_some() || !path.is_dir(), "fuzz/{dir}/{name} names no target");
        }
    }
    assert_eq!(TARGETS.len(), 7);
}

/// The harness itself: a panicking target fails the test and leaves its input on disk.
#[test]
fn panicking_input_is_saved_and_reported() {
    fn explode(bytes: &[u8]) -> bool {
        assert!(bytes != b"boom", "exploded");
        true
    }
    let target = Target { name: "harness_selftest", run: explode, dictionary: &[] };
    assert!(run_one(&target, b"fine", "a fine input"));
    let failure =
        catch_unwind(|| run_one(&target, b"boom", "the bad input")).expect_err("the panic must fail the test");
    let message = failure.downcast_ref::<String>().cloned().unwrap_or_default();
    let saved = crash_dir("harness_selftest").join(content_name(b"boom"));
    assert!(message.contains("exploded") && message.contains(&saved.display().to_string()), "{message}");
    assert_eq!(std::fs::read(&saved).unwrap(), b"boom");
    std::fs::remove_dir_all(crash_dir("harness_selftest")).unwrap();
}

macro_rules! smoke_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test]
        fn $name() {
            smoke(stringify!($name));
        })*
    };
}

smoke_tests!(image, http_images, http_v2, grpc, darknet_cfg, darknet_weights, safetensors);
