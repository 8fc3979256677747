//! Zipf-like popularity: a few items get most of the picks.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};

/// Zipf ranks over `n` items as 0-based indexes (index 0 most popular), sampled with any RNG.
#[derive(Clone, Debug)]
pub(crate) struct Popularity {
    n: usize,
    zipf: Zipf<f64>,
}

impl Popularity {
    /// `n = 0` is treated as 1 (always index 0); a negative or NaN exponent as 0 (uniform).
    pub(crate) fn new(n: usize, exponent: f64) -> Popularity {
        let n = n.max(1);
        let exponent = if exponent.is_finite() && exponent > 0.0 {
            exponent
        } else {
            0.0
        };
        let zipf = Zipf::new(n as f64, exponent).expect("n >= 1 and exponent >= 0");
        Popularity { n, zipf }
    }

    pub(crate) fn sample(&self, rng: &mut impl rand::Rng) -> usize {
        let rank = self.zipf.sample(rng) as usize;
        rank.clamp(1, self.n) - 1
    }
}

/// A seeded Zipf picker over `n` items (index 0 most popular): the same seed gives the same
/// sequence of picks. Used by benchmarks to choose hot orders to read.
///
/// `n = 0` is treated as 1; an exponent of 0 (or a negative or NaN one) is uniform.
#[derive(Clone, Debug)]
pub struct ZipfPicker {
    popularity: Popularity,
    rng: ChaCha8Rng,
}

impl ZipfPicker {
    pub fn new(n: usize, exponent: f64, seed: u64) -> Self {
        ZipfPicker {
            popularity: Popularity::new(n, exponent),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The next index, in `0..n`.
    pub fn pick(&mut self) -> usize {
        self.popularity.sample(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(picker: &mut ZipfPicker, n: usize, draws: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..draws {
            counts[picker.pick()] += 1;
        }
        counts
    }

    #[test]
    fn the_first_items_get_most_picks() {
        let mut picker = ZipfPicker::new(100, 1.1, 42);
        let counts = histogram(&mut picker, 100, 20_000);
        let top10: usize = counts[..10].iter().sum();
        let bottom50: usize = counts[50..].iter().sum();
        assert!(
            top10 > 20_000 / 2,
            "top 10 of 100 got only {top10} of 20000"
        );
        assert!(top10 > 5 * bottom50, "top10 {top10} vs bottom50 {bottom50}");
        assert!(
            counts[0] > counts[1] && counts[1] > counts[5] && counts[5] > counts[50],
            "{counts:?}"
        );
        // Zipf with s = 1.1: index 0 is picked about 2^1.1 = 2.14 times as often as index 1.
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((1.8..2.6).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn exponent_zero_is_uniform() {
        let mut picker = ZipfPicker::new(10, 0.0, 1);
        let counts = histogram(&mut picker, 10, 20_000);
        for c in counts {
            assert!((1_600..2_400).contains(&c), "{c}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_picks_and_another_seed_others() {
        let picks = |seed| {
            let mut p = ZipfPicker::new(1000, 1.1, seed);
            (0..200).map(|_| p.pick()).collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
    }

    #[test]
    fn picks_stay_in_range_even_for_tiny_or_odd_inputs() {
        for (n, s) in [(0, 1.1), (1, 1.1), (2, 3.0), (5, -1.0), (5, f64::NAN)] {
            let mut picker = ZipfPicker::new(n, s, 3);
            for _ in 0..1000 {
                assert!(picker.pick() < n.max(1), "n={n} s={s}");
            }
        }
    }
}
