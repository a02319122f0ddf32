//! Small statistics for timing comparisons: a nearest-rank quantile and a bootstrap interval
//! of the gap between two medians. Shared by the bench's login-timing scenario and the
//! ignored measurement in tests/timing.rs.

/// The `q` quantile (nearest rank) of `samples`.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A 95 % bootstrap interval of median(a) - median(b), from `rounds` resamples (a small
/// xorshift generator: the figures need no better randomness).
pub fn bootstrap_gap(a: &[f64], b: &[f64], rounds: usize) -> (f64, f64) {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |len: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % len as u64) as usize
    };
    let mut gaps: Vec<f64> = (0..rounds)
        .map(|_| {
            let ra: Vec<f64> = (0..a.len()).map(|_| a[next(a.len())]).collect();
            let rb: Vec<f64> = (0..b.len()).map(|_| b[next(b.len())]).collect();
            quantile(&ra, 0.5) - quantile(&rb, 0.5)
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    (quantile(&gaps, 0.025), quantile(&gaps, 0.975))
}

/// Two sets of timings compared: each one's median and p90, the gap of the medians and its
/// 95 % bootstrap interval (all in the samples' unit).
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    pub median_a: f64,
    pub p90_a: f64,
    pub median_b: f64,
    pub p90_b: f64,
    pub gap: f64,
    pub low: f64,
    pub high: f64,
}

impl Gap {
    pub fn of(a: &[f64], b: &[f64]) -> Gap {
        let (median_a, median_b) = (quantile(a, 0.5), quantile(b, 0.5));
        let (low, high) = bootstrap_gap(a, b, 2000);
        Gap {
            median_a,
            p90_a: quantile(a, 0.9),
            median_b,
            p90_b: quantile(b, 0.9),
            gap: median_a - median_b,
            low,
            high,
        }
    }

    /// Whether the interval holds 0: no gap this measurement can tell from noise.
    pub fn holds_zero(&self) -> bool {
        self.low <= 0.0 && 0.0 <= self.high
    }
}
