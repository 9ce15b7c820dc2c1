//! End-to-end tests of `csp-server`: each test starts the real binary on free loopback ports
//! with small generated models and drives it over REST and gRPC (see `csp_e2e`).
//!
//! Timing is never asserted beyond generous timeouts. Tests that need requests to wait in the
//! queue use a long `--max-queue-delay-ms` with a batch size larger than the load: a partial
//! batch then waits the whole delay, deterministically, whatever the machine's speed.

mod auth;
mod bad_inputs;
mod batching;
mod cancellation;
mod client_bench;
mod client_cli;
mod client_requests;
mod client_stream;
mod client_support;
mod deadlines;
mod default_model;
mod docker_entrypoint;
mod faults;
mod grpc_api;
mod input_corpus;
mod overload;
mod parity;
mod rest_api;
mod security;
mod shutdown;
mod soak;
mod tls;
mod web_page;
