//! The scaling model of the `rooms` scenario: CPU per delivery =
//! a + b·(workers a broadcast reaches) + c·(workers in the cluster), fitted
//! by least squares, one fit for the worker processes and one for the primary.

/// y = a + b·m + c·w over the points it was fitted to.
#[derive(Clone, Copy, Debug)]
pub struct Fit {
    /// [a, b, c].
    pub coef: [f64; 3],
    /// The largest |measured − fitted| over the points.
    pub max_residual: f64,
    pub points: usize,
}

impl Fit {
    /// The model at `m` workers reached and `w` workers in the cluster.
    pub fn at(&self, m: f64, w: f64) -> f64 {
        self.coef[0] + self.coef[1] * m + self.coef[2] * w
    }
}

/// Least squares over (m, w, y); `None` when the points do not tell the three
/// terms apart (fewer than three, or m and w moving together).
pub fn fit(points: &[(f64, f64, f64)]) -> Option<Fit> {
    // Normal equations XᵀX·β = Xᵀy with rows x = [1, m, w].
    let mut a = [[0.0f64; 4]; 3];
    for &(m, w, y) in points {
        let x = [1.0, m, w];
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += x[i] * x[j];
            }
            a[i][3] += x[i] * y;
        }
    }
    let scale = (0..3).map(|i| a[i][i]).fold(0.0f64, f64::max);
    if scale == 0.0 {
        return None;
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..3 {
        let pivot = (col..3).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 * scale {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (row, r) in a.iter_mut().enumerate() {
            if row != col {
                let f = r[col] / pivot_row[col];
                for (x, p) in r.iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let coef = [a[0][3] / a[0][0], a[1][3] / a[1][1], a[2][3] / a[2][2]];
    let mut f = Fit {
        coef,
        max_residual: 0.0,
        points: points.len(),
    };
    f.max_residual = points
        .iter()
        .map(|&(m, w, y)| (y - f.at(m, w)).abs())
        .fold(0.0, f64::max);
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The measured points of one server: local (m = 1) and spread (m =
    /// min(W, 5)) at W = 1, 2, 4, 8.
    fn grid(f: impl Fn(f64, f64) -> f64) -> Vec<(f64, f64, f64)> {
        [1.0, 2.0, 4.0, 8.0]
            .into_iter()
            .flat_map(|w: f64| [(1.0, w), (w.min(5.0), w)])
            .map(|(m, w)| (m, w, f(m, w)))
            .collect()
    }

    #[test]
    fn recovers_the_terms_of_an_exact_model() {
        let f = fit(&grid(|m, w| 2.0 + 0.5 * m + 0.25 * w)).unwrap();
        for (got, want) in f.coef.iter().zip([2.0, 0.5, 0.25]) {
            assert!((got - want).abs() < 1e-9, "{:?}", f.coef);
        }
        assert!(f.max_residual < 1e-9);
        assert!((f.at(5.0, 64.0) - (2.0 + 2.5 + 16.0)).abs() < 1e-9);
    }

    #[test]
    fn least_squares_splits_the_noise() {
        // ±0.1 alternating on an exact model: the terms stay close, and the
        // residual says how far the fit is from the points (no farther than
        // the true model, whose squares sum to 8 × 0.01).
        let mut pts = grid(|m, w| 3.0 + 0.2 * m + 0.1 * w);
        for (i, p) in pts.iter_mut().enumerate() {
            p.2 += if i % 2 == 0 { 0.1 } else { -0.1 };
        }
        let f = fit(&pts).unwrap();
        let [a, b, c] = f.coef;
        assert!(
            (a - 3.0).abs() < 0.1 && (b - 0.2).abs() < 0.1 && (c - 0.1).abs() < 0.03,
            "{:?}",
            f.coef
        );
        assert!(
            f.max_residual > 0.05 && f.max_residual < 0.3,
            "{}",
            f.max_residual
        );
    }

    #[test]
    fn refuses_what_the_points_cannot_tell_apart() {
        // Only local points: m is always 1, like the constant term.
        let local: Vec<_> = grid(|_, w| 1.0 + w)
            .into_iter()
            .filter(|p| p.0 == 1.0)
            .collect();
        assert!(fit(&local).is_none());
        assert!(fit(&[(1.0, 1.0, 2.0), (2.0, 2.0, 3.0)]).is_none());
        assert!(fit(&[]).is_none());
        // Three independent points are enough (the --quick run: W = 1, 2).
        let f = fit(&[(1.0, 1.0, 1.0), (1.0, 2.0, 1.5), (2.0, 2.0, 2.5)]).unwrap();
        assert!((f.at(1.0, 4.0) - 2.5).abs() < 1e-9, "{:?}", f.coef);
    }
}
