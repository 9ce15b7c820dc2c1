//! Client library for csp-server (REST and gRPC), shared by the `csp-client` binary and the
//! end-to-end tests: single requests ([`rest`], [`grpc`], [`stream`]), load generation
//! ([`bench`]), and output ([`report`], [`plot`], [`annotate`]).

pub mod annotate;
pub mod app;
pub mod bench;
pub mod cli;
pub mod error;
pub mod grpc;
pub mod images;
pub mod output;
pub mod plot;
pub mod report;
pub mod rest;
pub mod stream;
pub mod target;
pub mod tls;
pub mod types;

pub use error::{ClientError, ErrorKind};
pub use target::{Connection, Protocol, Target};
pub use tls::TlsOptions;
pub use types::{Class, ImageResult, InferResponse, Params, Task, Timing};

/// Generated gRPC clients and messages (`proto/`): client side only.
pub mod pb {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod inference {
        tonic::include_proto!("inference");
    }

    pub mod cspserve {
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v1 {
            tonic::include_proto!("cspserve.v1");
        }
    }
}
