//! Test-only fault injection for the forward pass (cargo feature `fault-injection`, never in a
//! normal build). With `CSP_FAULT_INJECTION=1` in the server's environment, a batch holding an
//! input whose first value is exactly [`FAIL_TRIGGER`] fails with a backend error, and one holding
//! [`PANIC_TRIGGER`] panics inside the backend thread: the end-to-end tests use this to prove a
//! backend fault reaches only the requests in that batch and the server keeps serving.

use candle_core::Tensor;

/// The environment variable that arms the hooks ("1"); anything else leaves them off.
pub const ENV: &str = "CSP_FAULT_INJECTION";
/// First input value that makes the forward pass return an error (no preprocessed image gives it).
pub const FAIL_TRIGGER: f32 = -7777.0;
/// First input value that makes the forward pass panic.
pub const PANIC_TRIGGER: f32 = -8888.0;

/// Whether the hooks are armed, read once.
pub fn armed() -> bool {
    static ARMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ARMED.get_or_init(|| {
        let on = std::env::var(ENV).is_ok_and(|v| v == "1");
        if on {
            tracing::warn!("fault injection armed ({ENV}=1): test builds only");
        }
        on
    })
}

/// The injected fault for this batch, if any input asks for one.
pub fn check(inputs: &[&Tensor]) -> candle_core::Result<()> {
    if !armed() {
        return Ok(());
    }
    for input in inputs {
        let first = input.flatten_all()?.get(0)?.to_scalar::<f32>()?;
        if first == FAIL_TRIGGER {
            return Err(candle_core::Error::Msg("injected backend fault".into()));
        }
        if first == PANIC_TRIGGER {
            panic!("injected backend panic");
        }
    }
    Ok(())
}
