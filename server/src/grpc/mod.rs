//! The gRPC transport: the KServe v2 protocol (`inference.GRPCInferenceService`, with Triton's
//! configuration, statistics and streaming RPCs), our own `cspserve.v1.CspService`, the standard
//! health service and server reflection. Handlers only translate between the wire and [`Infer`].
//!
//! Messages are generated from `proto/*.proto` at build time; `pb` exports them, with clients,
//! for tests and tools.

mod csp;
pub mod fuzz;
mod health;
mod kserve;
mod params;
#[cfg(test)]
mod socket_tests;
pub mod status;
mod stream;
pub mod tensor;

use tonic::service::Routes;

use crate::core::Infer;
use crate::secret::Secret;

pub use kserve::{EXTENSIONS, PLATFORM, SERVER_NAME};
pub(crate) use params::IGNORED as IGNORED_PARAMETERS;
pub use stream::STREAM_WINDOW;

/// Generated messages, servers and clients.
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

/// The encoded descriptors of every served proto file, for reflection and for clients that
/// build requests dynamically.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cspserve_descriptor.bin"));

/// Fully-qualified names of the services this transport serves besides health and reflection.
pub const SERVICE_NAMES: [&str; 2] = ["inference.GRPCInferenceService", "cspserve.v1.CspService"];

#[derive(Clone, Debug, Default)]
pub struct GrpcOptions {
    /// When set, inference RPCs need `authorization: Bearer <key>` metadata (UNAUTHENTICATED
    /// otherwise); health, metadata and model descriptions stay open.
    pub api_key: Option<Secret>,
}

/// Every gRPC service, ready for `tonic::transport::Server::builder().add_routes(..)`.
///
/// Must be called inside a tokio runtime: it starts the task that keeps the health service in
/// step with [`Infer::watch_health`].
pub fn routes(infer: Infer, opts: GrpcOptions) -> Routes {
    let api_key = status::ApiKey::new(opts.api_key.map(|k| k.expose().to_owned()));
    let limit = infer.limits().max_body_bytes;

    let kserve = pb::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(kserve::KServe {
        infer: infer.clone(),
        api_key: api_key.clone(),
    })
    .max_decoding_message_size(limit);
    let csp = pb::cspserve::v1::csp_service_server::CspServiceServer::new(csp::Csp { infer: infer.clone(), api_key })
        .max_decoding_message_size(limit);

    let reporter = tonic_health::server::HealthReporter::new();
    let health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
    );
    let mut names: Vec<String> = vec![String::new()];
    names.extend(SERVICE_NAMES.iter().map(|s| s.to_string()));
    names.extend(infer.models().into_iter().map(|m| m.name));
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(health::follow(reporter, infer.watch_health(), names));
        }
        Err(_) => tracing::error!("grpc::routes called outside a tokio runtime: health statuses will not update"),
    }

    let mut routes = Routes::new(kserve).add_service(csp).add_service(health);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    match reflection.build_v1() {
        Ok(svc) => routes = routes.add_service(svc),
        Err(e) => tracing::error!("gRPC reflection (v1) unavailable: {e}"),
    }
    // grpcurl and older tools still ask the v1alpha service.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    match reflection.build_v1alpha() {
        Ok(svc) => routes = routes.add_service(svc),
        Err(e) => tracing::error!("gRPC reflection (v1alpha) unavailable: {e}"),
    }
    routes
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_holds_both_services_and_builds_reflection() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| format!("{}.{}", f.package(), s.name())))
            .collect();
        for name in SERVICE_NAMES {
            assert!(services.iter().any(|s| s == name), "{name} missing from {services:?}");
        }
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        assert!(reflection.build_v1().is_ok());
    }

    /// Field numbers are the wire contract with Triton's clients: pin the ones they rely on.
    #[test]
    fn v2_field_numbers_match_the_standard() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let file = fds.file.iter().find(|f| f.package() == "inference").unwrap();
        let number = |message: &str, field: &str| -> i32 {
            let mut path = message.split('.');
            let top = path.next().unwrap();
            let mut msg = file.message_type.iter().find(|m| m.name() == top).unwrap();
            for nested in path {
                msg = msg.nested_type.iter().find(|m| m.name() == nested).unwrap();
            }
            msg.field.iter().find(|f| f.name() == field).unwrap().number()
        };
        let expected = [
            ("ModelInferRequest", "model_name", 1),
            ("ModelInferRequest", "model_version", 2),
            ("ModelInferRequest", "id", 3),
            ("ModelInferRequest", "parameters", 4),
            ("ModelInferRequest", "inputs", 5),
            ("ModelInferRequest", "outputs", 6),
            ("ModelInferRequest", "raw_input_contents", 7),
            ("ModelInferRequest.InferInputTensor", "contents", 5),
            ("ModelInferResponse", "outputs", 5),
            ("ModelInferResponse", "raw_output_contents", 6),
            ("ModelStreamInferResponse", "infer_response", 2),
            ("InferTensorContents", "fp32_contents", 6),
            ("InferTensorContents", "bytes_contents", 8),
            ("InferParameter", "double_param", 4),
            ("ModelMetadataResponse", "outputs", 5),
            ("ModelConfig", "max_batch_size", 4),
            ("ModelConfig", "instance_group", 7),
            ("ModelConfig", "dynamic_batching", 11),
            ("ModelConfig", "backend", 17),
            ("ModelInput", "dims", 4),
            ("ModelInput", "optional", 8),
            ("ModelOutput", "dims", 3),
            ("ModelInstanceGroup", "kind", 4),
            ("ModelDynamicBatching", "default_queue_policy", 6),
            ("ModelStatistics", "inference_stats", 6),
            ("InferStatistics", "compute_infer", 5),
        ];
        for (message, field, want) in expected {
            assert_eq!(number(message, field), want, "{message}.{field}");
        }
    }
}
