#![no_main]

// Same function as the `darknet_weights` smoke test (fuzz/tests/fuzz_smoke.rs), under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = csp_fuzz::target("darknet_weights") {
        (target.run)(data);
    }
});
