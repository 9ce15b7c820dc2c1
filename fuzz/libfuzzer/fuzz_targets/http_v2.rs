#![no_main]

// Same function as the `http_v2` smoke test (fuzz/tests/fuzz_smoke.rs), under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = csp_fuzz::target("http_v2") {
        (target.run)(data);
    }
});
