//! The open loop's send times. Request `i` is due at a fixed offset from the start, computed
//! before anything is sent, so a slow server cannot delay later sends (no coordinated omission):
//! its slowness shows up as latency measured from the due time.

use std::time::Duration;

/// How requests are spaced at an average of `rate` per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrivals {
    /// Exactly `1 / rate` apart.
    Uniform,
    /// Exponential gaps (a Poisson process), as independent users would send; seeded, so runs
    /// repeat.
    Poisson { seed: u64 },
}

/// Send offsets from the start of the run, in order.
#[derive(Clone, Debug)]
pub struct Schedule {
    rate: f64,
    arrivals: Arrivals,
    next: u64,
    /// Poisson: the offset so far (seconds) and the generator's state.
    elapsed: f64,
    state: u64,
}

impl Schedule {
    /// `rate` requests per second, > 0 and finite.
    pub fn new(rate: f64, arrivals: Arrivals) -> Result<Self, String> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("rate must be a positive number of requests per second, got {rate}"));
        }
        let state = match arrivals {
            Arrivals::Uniform => 0,
            Arrivals::Poisson { seed } => seed,
        };
        Ok(Schedule { rate, arrivals, next: 0, elapsed: 0.0, state })
    }

    /// How many requests a run of `duration` sends at a uniform `rate`: those due strictly
    /// before its end (the first is due at 0).
    pub fn uniform_count(rate: f64, duration: Duration) -> u64 {
        let exact = rate * duration.as_secs_f64();
        // Due times i / rate < duration  <=>  i < rate * duration.
        let n = exact.ceil();
        if n.is_finite() && n > 0.0 {
            n as u64
        } else {
            0
        }
    }

    /// A uniform in (0, 1] from splitmix64: never 0, so its logarithm is finite.
    fn unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let i = self.next;
        self.next += 1;
        let seconds = match self.arrivals {
            // i / rate directly rather than summing gaps: no rounding drift over long runs.
            Arrivals::Uniform => i as f64 / self.rate,
            Arrivals::Poisson { .. } => {
                // The first request goes at once; after it, exponential gaps of mean 1 / rate.
                if i > 0 {
                    self.elapsed += -self.unit().ln() / self.rate;
                }
                self.elapsed
            }
        };
        Some(Duration::from_secs_f64(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_offsets_are_exact_multiples_of_the_period() {
        let offsets: Vec<Duration> = Schedule::new(4.0, Arrivals::Uniform).unwrap().take(5).collect();
        let ms: Vec<u128> = offsets.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 250, 500, 750, 1000]);
        // No drift after many requests (a summed 1/3 would).
        let far = Schedule::new(3.0, Arrivals::Uniform).unwrap().nth(300_000).unwrap();
        assert_eq!(far, Duration::from_secs(100_000));
    }

    #[test]
    fn uniform_count_is_the_number_due_before_the_end() {
        assert_eq!(Schedule::uniform_count(10.0, Duration::from_secs(2)), 20);
        assert_eq!(Schedule::uniform_count(10.0, Duration::from_millis(2050)), 21);
        assert_eq!(Schedule::uniform_count(3.0, Duration::from_millis(500)), 2);
        assert_eq!(Schedule::uniform_count(1.0, Duration::ZERO), 0);
        // The count agrees with the schedule itself.
        let d = Duration::from_millis(1234);
        let due = Schedule::new(7.5, Arrivals::Uniform).unwrap().take_while(|t| *t < d).count() as u64;
        assert_eq!(due, Schedule::uniform_count(7.5, d));
    }

    #[test]
    fn poisson_gaps_average_one_over_the_rate_and_repeat_by_seed() {
        let rate = 200.0;
        let offsets: Vec<Duration> = Schedule::new(rate, Arrivals::Poisson { seed: 7 }).unwrap().take(20_001).collect();
        assert_eq!(offsets[0], Duration::ZERO);
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "offsets must not go back in time");
        let mean_gap = offsets[20_000].as_secs_f64() / 20_000.0;
        assert!((mean_gap * rate - 1.0).abs() < 0.03, "mean gap {mean_gap}");
        // Exponential gaps: about e^-1 of them are longer than the mean.
        let long = offsets.windows(2).filter(|w| (w[1] - w[0]).as_secs_f64() > 1.0 / rate).count();
        assert!((long as f64 / 20_000.0 - (-1.0f64).exp()).abs() < 0.02, "{long}");
        let again: Vec<Duration> = Schedule::new(rate, Arrivals::Poisson { seed: 7 }).unwrap().take(50).collect();
        assert_eq!(&offsets[..50], &again[..]);
        let other: Vec<Duration> = Schedule::new(rate, Arrivals::Poisson { seed: 8 }).unwrap().take(50).collect();
        assert_ne!(&offsets[..50], &other[..]);
    }

    #[test]
    fn bad_rates_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Schedule::new(rate, Arrivals::Uniform).is_err(), "{rate}");
        }
    }
}
