#![no_main]

// Same function as the `http_images` smoke test (fuzz/tests/fuzz_smoke.rs), under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(target) = csp_fuzz::target("http_images") {
        (target.run)(data);
    }
});
