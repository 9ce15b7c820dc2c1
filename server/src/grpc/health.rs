//! The standard `grpc.health.v1.Health` service, following the core's health signal: SERVING while
//! the server is ready, NOT_SERVING while it starts or drains. The same status is reported for the
//! whole server (""), for each gRPC service, and for each model by name.

use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::core::Health;

pub fn serving_status(health: Health) -> ServingStatus {
    if health.live && health.ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Keeps `reporter` in step with `health` until the core goes away, then reports NOT_SERVING.
pub async fn follow(reporter: HealthReporter, mut health: watch::Receiver<Health>, names: Vec<String>) {
    loop {
        let status = serving_status(*health.borrow_and_update());
        for name in &names {
            reporter.set_service_status(name, status).await;
        }
        if health.changed().await.is_err() {
            break;
        }
    }
    for name in &names {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic_health::pb::HealthCheckRequest;

    use super::*;

    fn wire(s: ServingStatus) -> i32 {
        tonic_health::pb::health_check_response::ServingStatus::from(s) as i32
    }

    async fn check(svc: &impl tonic_health::pb::health_server::Health, name: &str) -> Option<i32> {
        let req = tonic::Request::new(HealthCheckRequest { service: name.into() });
        svc.check(req).await.ok().map(|r| r.into_inner().status)
    }

    #[tokio::test]
    async fn statuses_follow_readiness() {
        let (tx, rx) = watch::channel(Health { live: true, ready: false });
        let reporter = HealthReporter::new();
        let svc = tonic_health::server::HealthService::from_health_reporter(reporter.clone());
        let names = vec![String::new(), "resnet".to_string()];
        let task = tokio::spawn(follow(reporter, rx, names));
        let wait_for = |name: &'static str, want: ServingStatus| {
            let svc = &svc;
            async move {
                for _ in 0..200 {
                    if check(svc, name).await == Some(wire(want)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("`{name}` never became {want:?}");
            }
        };
        wait_for("resnet", ServingStatus::NotServing).await;
        tx.send(Health { live: true, ready: true }).unwrap();
        wait_for("", ServingStatus::Serving).await;
        wait_for("resnet", ServingStatus::Serving).await;
        assert_eq!(check(&svc, "unknown-model").await, None);
        tx.send(Health { live: true, ready: false }).unwrap();
        wait_for("resnet", ServingStatus::NotServing).await;
        tx.send(Health { live: true, ready: true }).unwrap();
        wait_for("", ServingStatus::Serving).await;
        drop(tx);
        task.await.unwrap();
        assert_eq!(check(&svc, "").await, Some(wire(ServingStatus::NotServing)));
    }
}
