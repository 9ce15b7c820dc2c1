//! Load generation: closed loop (a fixed number of requests in flight), open loop (requests sent
//! on a precomputed schedule, latency measured from each request's due time, see [`schedule`]),
//! sweeps over several levels, and the server's own figures scraped around each level.

pub mod result;
pub mod runner;
pub mod schedule;
pub mod server_metrics;
pub mod stats;

use std::time::Duration;

use bytes::Bytes;

pub use result::{LevelResult, LevelSpec};
pub use runner::{run_all, run_level};
pub use schedule::Arrivals;

use crate::types::{Params, Task};
use crate::Protocol;

/// How hard one level pushes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// `concurrency` workers, each sending its next request when the last one is answered.
    Closed { concurrency: usize },
    /// `rate` requests per second on schedule, however slow the answers.
    Open { rate: f64, arrivals: Arrivals },
}

/// When a phase ends. Either way it ends by itself: requests still in flight then are awaited
/// (each bounded by the client timeout) and counted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// Stop sending after this long.
    Duration(Duration),
    /// Send exactly this many requests.
    Requests(u64),
}

/// What every request of a run sends.
#[derive(Clone, Debug)]
pub struct Workload {
    pub task: Task,
    pub model: String,
    pub params: Params,
    /// The image set, cycled through.
    pub images: Vec<Bytes>,
    pub images_per_request: usize,
}

impl Workload {
    /// The images of request number `n`: the next `images_per_request` of the set, cyclically.
    pub fn images_for(&self, n: u64) -> Vec<Bytes> {
        let len = self.images.len().max(1) as u64;
        let per = self.images_per_request.max(1) as u64;
        (0..per).filter_map(|j| self.images.get(((n * per + j) % len) as usize).cloned()).collect()
    }
}

/// A whole `csp-client bench` run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub protocol: Protocol,
    pub workload: Workload,
    /// One level per entry (a sweep when several).
    pub loads: Vec<Load>,
    pub stop: Stop,
    /// Run each level this long first, unmeasured (connections opened, server warm).
    pub warmup: Duration,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_cycle_through_the_image_set() {
        let images: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i])).collect();
        let w = Workload {
            task: Task::Classify,
            model: "m".into(),
            params: Params::default(),
            images,
            images_per_request: 2,
        };
        let firsts: Vec<Vec<u8>> = (0..4).map(|n| w.images_for(n).iter().map(|b| b[0]).collect()).collect();
        assert_eq!(firsts, vec![vec![0, 1], vec![2, 3], vec![4, 0], vec![1, 2]]);
    }
}
