//! Where a model runs and in what precision: the one parser of `cpu` / `cuda` / `cuda:N`, the one
//! place that opens a device, and the floating-point type a model computes in; shared by
//! csp-model, csp-server and csp-train.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A device named on a command line or in a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn is_gpu(self) -> bool {
        matches!(self, DeviceSpec::Cuda(_))
    }

    /// Opens the device. A CUDA device needs a build with the `cuda` feature, a GPU and its driver;
    /// the error says which is missing rather than candle's generic message.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => open_cuda(n),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| {
        Error::Device(format!("opening cuda:{ordinal} (is there a GPU with that index and a driver?): {e}"))
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Err(Error::Device(format!("cuda:{ordinal} needs a build with `--features cuda`")))
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(Error::Device(format!("unknown device `{s}` (cpu, cuda, cuda:N)"))),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The floating-point type a model's weights and activations are held in. Inputs and outputs stay
/// f32 at the model's edges; only the forward pass changes. f16 and bf16 are for GPUs (tensor
/// cores, half the memory traffic); on the CPU they run on candle's reference ops, which are much
/// slower than the f32 fast engine, and exist there to check the path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// Whether a model can compute in this precision on the CPU: not bf16, for which candle's CPU
    /// backend has no matmul. The error says what to use instead.
    pub fn check_cpu(self) -> Result<()> {
        match self {
            Precision::Bf16 => Err(Error::Device(
                "bf16 runs on CUDA only (candle's CPU matmul has no bf16); on the CPU use f32 or f16".into(),
            )),
            Precision::F32 | Precision::F16 => Ok(()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (text, spec, shown) in [
            ("cpu", DeviceSpec::Cpu, "cpu"),
            ("cuda", DeviceSpec::Cuda(0), "cuda:0"),
            ("cuda:3", DeviceSpec::Cuda(3), "cuda:3"),
        ] {
            let parsed: DeviceSpec = text.parse().unwrap();
            assert_eq!(parsed, spec);
            assert_eq!(parsed.to_string(), shown);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            assert!(bad.parse::<DeviceSpec>().is_err(), "{bad} accepted");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_so() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
