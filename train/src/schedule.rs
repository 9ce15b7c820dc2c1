//! Learning-rate schedules as in darknet's `[net]` section: a warm-up (`burn_in`) of
//! lr * (step / burn_in)^power, then polynomial decay (`policy=poly`) or step decay
//! (`policy=steps`), or a constant rate.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decay {
    Constant,
    /// lr * (1 - step / total)^power.
    Poly {
        power: f64,
    },
    /// lr * scale^(number of `at` steps already reached).
    Steps {
        at: Vec<usize>,
        scale: f64,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub base_lr: f64,
    pub total_steps: usize,
    pub decay: Decay,
    /// Warm-up steps (darknet's `burn_in`); 0 for none.
    pub warmup: usize,
    /// Exponent of the warm-up ramp (darknet's default 4; 1 is linear).
    pub warmup_power: f64,
}

impl Schedule {
    /// The learning rate of step `step` (0-based: the rate the `step`-th update uses).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            // Counting the update being made, so the very first step does not get 0.
            let ramp = (step + 1) as f64 / self.warmup as f64;
            return self.base_lr * ramp.powf(self.warmup_power);
        }
        match &self.decay {
            Decay::Constant => self.base_lr,
            Decay::Poly { power } => {
                let left = 1.0 - step as f64 / self.total_steps.max(1) as f64;
                self.base_lr * left.max(0.0).powf(*power)
            }
            Decay::Steps { at, scale } => {
                let reached = at.iter().filter(|&&s| step >= s).count();
                self.base_lr * scale.powi(reached as i32)
            }
        }
    }
}

/// Step decay points given as fractions of the run (`0.8,0.9`) or absolute steps (`4000,4500`).
pub fn parse_steps(spec: &str, total_steps: usize) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v: f64 = part.parse().map_err(|_| anyhow::anyhow!("bad step `{part}` in `{spec}`"))?;
        if !(v.is_finite() && v >= 0.0) {
            anyhow::bail!("bad step `{part}` in `{spec}`");
        }
        let step = if v < 1.0 || (v == 1.0 && part.contains('.')) { (v * total_steps as f64).round() } else { v };
        out.push(step as usize);
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn warmup_then_poly() {
        let s = Schedule {
            base_lr: 0.1,
            total_steps: 100,
            decay: Decay::Poly { power: 4.0 },
            warmup: 10,
            warmup_power: 4.0,
        };
        assert!(close(s.lr(0), 0.1 * 0.1f64.powi(4)));
        assert!(close(s.lr(4), 0.1 * 0.5f64.powi(4)));
        assert!(close(s.lr(10), 0.1 * 0.9f64.powi(4)));
        assert!(close(s.lr(50), 0.1 * 0.5f64.powi(4)));
        assert_eq!(s.lr(100), 0.0);
        assert_eq!(s.lr(150), 0.0);
    }

    #[test]
    fn steps_decay() {
        let s = Schedule {
            base_lr: 1.0,
            total_steps: 100,
            decay: Decay::Steps { at: vec![80, 90], scale: 0.1 },
            warmup: 0,
            warmup_power: 4.0,
        };
        assert_eq!(s.lr(0), 1.0);
        assert_eq!(s.lr(79), 1.0);
        assert!(close(s.lr(80), 0.1));
        assert!(close(s.lr(89), 0.1));
        assert!(close(s.lr(90), 0.01));
    }

    #[test]
    fn linear_warmup_reaches_base() {
        let s = Schedule { base_lr: 0.5, total_steps: 10, decay: Decay::Constant, warmup: 4, warmup_power: 1.0 };
        let lrs: Vec<f64> = (0..5).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, vec![0.125, 0.25, 0.375, 0.5, 0.5]);
    }

    #[test]
    fn step_specs() {
        assert_eq!(parse_steps("0.8,0.9", 1000).unwrap(), vec![800, 900]);
        assert_eq!(parse_steps("400, 450", 1000).unwrap(), vec![400, 450]);
        assert!(parse_steps("x", 10).is_err());
        assert!(parse_steps("-1", 10).is_err());
    }
}
