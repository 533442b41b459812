//! The statistics the report judges by, as pure functions of the rounds' figures.
//!
//! - Spread of a row: the coefficient of variation (sample standard deviation ÷ mean) of
//!   its rounds, beside their min–max.
//! - A ratio between two rows (thinly ÷ a peer) is estimated on the log scale: the point is
//!   the ratio of the geometric means, and its 95 % confidence interval is Welch's
//!   t-interval for the difference of the mean logs (unequal variances, Welch–Satterthwaite
//!   degrees of freedom, rounded down: conservative), exponentiated. Rounds are interleaved
//!   (A B A B), so they are treated as independent samples of each engine; no pairing.
//! - A target is met only when the whole interval clears it, missed only when the whole
//!   interval falls short; an interval that straddles it is inconclusive, and fewer than two
//!   rounds on either side cannot be judged at all.

use serde::{Deserialize, Serialize};

/// Confidence level of every interval in the report.
pub const CONFIDENCE: &str = "95 %";

/// A ratio with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub point: f64,
    pub hi: f64,
}

/// Mean and sample standard deviation (n − 1); `None` for fewer than two finite values.
pub fn mean_sd(values: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.len() < 2 {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, var.sqrt()))
}

/// Coefficient of variation in percent (sd ÷ mean × 100); `None` under two rounds.
pub fn cv_percent(values: &[f64]) -> Option<f64> {
    let (mean, sd) = mean_sd(values)?;
    (mean != 0.0).then(|| sd / mean.abs() * 100.0)
}

/// Student's t quantile for a two-sided 95 % interval (the 0.975 quantile) at `df`
/// degrees of freedom, rounded down to a whole number (a wider, conservative interval).
pub fn t_975(df: f64) -> f64 {
    // Quantiles for 1 … 30 degrees of freedom (any statistics table).
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let d = df.floor().max(1.0);
    if d <= 30.0 {
        return TABLE[d as usize - 1];
    }
    // Beyond the table: the normal quantile with the first Cornish–Fisher correction
    // (within 0.001 of the exact value from 30 degrees of freedom on).
    let z: f64 = 1.959_964;
    z + (z.powi(3) + z) / (4.0 * d)
}

/// The ratio `num ÷ den` of two sets of positive figures with its 95 % interval (see the
/// module doc); `None` if either side has fewer than two positive values.
pub fn ratio_interval(num: &[f64], den: &[f64]) -> Option<Interval> {
    let logs = |v: &[f64]| {
        v.iter().filter(|x| **x > 0.0 && x.is_finite()).map(|x| x.ln()).collect::<Vec<_>>()
    };
    let (a, b) = (logs(num), logs(den));
    let ((ma, sa), (mb, sb)) = (mean_sd(&a)?, mean_sd(&b)?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (sa * sa / na, sb * sb / nb);
    let se = (va + vb).sqrt();
    let diff = ma - mb;
    if se == 0.0 {
        let p = diff.exp();
        return Some(Interval { lo: p, point: p, hi: p });
    }
    let df = (va + vb).powi(2) / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let half = t_975(df) * se;
    Some(Interval { lo: (diff - half).exp(), point: diff.exp(), hi: (diff + half).exp() })
}

/// How a target fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval clears the target.
    Met,
    /// The whole interval falls short of it.
    Missed,
    /// The interval straddles the target.
    Inconclusive,
    /// Fewer than two rounds on a side, or a side not measured.
    NotJudged,
}

impl Verdict {
    /// Judges a ratio that must be at least `target` (`at_least`) or at most `target`.
    pub fn judge(ci: Option<Interval>, target: f64, at_least: bool) -> Verdict {
        let Some(ci) = ci else { return Verdict::NotJudged };
        let (clears, fails) = if at_least {
            (ci.lo >= target, ci.hi < target)
        } else {
            (ci.hi <= target, ci.lo > target)
        };
        match (clears, fails) {
            (true, _) => Verdict::Met,
            (_, true) => Verdict::Missed,
            _ => Verdict::Inconclusive,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::Inconclusive => "inconclusive (interval straddles the target)",
            Verdict::NotJudged => "not judged (needs ≥ 2 rounds)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mean_and_sample_deviation_of_fixed_figures() {
        let (m, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).expect("eight values");
        assert_eq!(m, 5.0);
        assert!(close(sd, (32.0f64 / 7.0).sqrt(), 1e-12));
        assert!(mean_sd(&[1.0]).is_none());
        assert!(close(cv_percent(&[90.0, 110.0]).expect("two"), 14.142_135, 1e-5));
    }

    #[test]
    fn t_quantiles_match_the_table_and_approach_the_normal() {
        assert_eq!(t_975(1.0), 12.706);
        assert_eq!(t_975(2.9), 4.303, "fractional df round down");
        assert_eq!(t_975(30.0), 2.042);
        assert!(close(t_975(60.0), 2.000, 0.002));
        assert!(close(t_975(1e9), 1.96, 0.001));
    }

    #[test]
    fn a_ratio_interval_is_welchs_interval_on_the_logs() {
        // Logs of num: {ln 2 ± 0.1}, of den: {0 ± 0.1}: diff ln 2, se = sqrt(2·0.02/2)·…
        let num = [2.0 * 0.1f64.exp(), 2.0 * (-0.1f64).exp()];
        let den = [0.1f64.exp(), (-0.1f64).exp()];
        let ci = ratio_interval(&num, &den).expect("two rounds each");
        assert!(close(ci.point, 2.0, 1e-12));
        // sd of each log set = 0.1·√2, se = √(0.02/2 + 0.02/2) = √0.02, df = 2.
        let half = 4.303 * 0.02f64.sqrt();
        assert!(close(ci.lo, 2.0 * (-half).exp(), 1e-9));
        assert!(close(ci.hi, 2.0 * half.exp(), 1e-9));
        assert!(ratio_interval(&[1.0], &[1.0, 2.0]).is_none());
        let exact = ratio_interval(&[3.0, 3.0], &[1.0, 1.0]).expect("no spread");
        assert!([exact.lo, exact.point, exact.hi].iter().all(|v| close(*v, 3.0, 1e-12)));
    }

    #[test]
    fn a_target_is_met_only_when_the_whole_interval_clears_it() {
        let ci = |lo, hi| Some(Interval { lo, point: (lo + hi) / 2.0, hi });
        assert_eq!(Verdict::judge(ci(1.6, 2.0), 1.5, true), Verdict::Met);
        assert_eq!(Verdict::judge(ci(1.4, 2.0), 1.5, true), Verdict::Inconclusive);
        assert_eq!(Verdict::judge(ci(1.0, 1.4), 1.5, true), Verdict::Missed);
        assert_eq!(Verdict::judge(ci(1.0, 1.4), 1.5, false), Verdict::Met);
        assert_eq!(Verdict::judge(ci(1.6, 1.8), 1.5, false), Verdict::Missed);
        assert_eq!(Verdict::judge(None, 1.5, true), Verdict::NotJudged);
    }
}
