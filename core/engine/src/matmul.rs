//! The one bounds-checked entry to the `gemm` crate's f32 matrix product, for the CPU kernels that
//! multiply strided views of their buffers in place (convolution, blocked attention).
//!
//! `gemm::gemm` takes raw pointers and strides; [`gemm_f32`] takes slices and [`View`]s and checks,
//! before the unsafe call, that every element each view can address lies inside its slice and that
//! the destination's elements are distinct, so a wrong stride is a panic with a message rather
//! than memory corruption.

pub use gemm::Parallelism;

/// A rows × cols matrix inside a slice: element (i, j) at `offset + i·row_stride + j·col_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View {
    /// A dense row-major matrix at the start of its slice.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self { offset: 0, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The same view starting `by` elements further into the slice.
    pub fn shifted(self, by: usize) -> Self {
        Self { offset: self.offset + by, ..self }
    }

    /// The largest index the view addresses (None when it is empty).
    fn last_index(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return None;
        }
        Some(self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride)
    }

    /// Whether distinct (i, j) always address distinct elements (needed of a destination).
    fn is_injective(&self) -> bool {
        let (rs, cs) = (self.row_stride, self.col_stride);
        self.rows <= 1 && (self.cols <= 1 || cs > 0)
            || self.cols <= 1 && rs > 0
            || cs > 0 && rs >= cs * self.cols
            || rs > 0 && cs >= rs * self.rows
    }

    fn check(&self, len: usize, what: &str) {
        if let Some(last) = self.last_index() {
            assert!(last < len, "gemm: {what} view {self:?} reaches index {last} of a slice of {len}");
        }
    }
}

/// `dst = (accumulate ? dst : 0) + scale · lhs · rhs` on f32 views.
///
/// # Panics
/// When the shapes disagree, a view reaches outside its slice, or the destination view maps two
/// positions to one element: these are bugs of the caller, never properties of the input data.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    dst: &mut [f32],
    d: View,
    accumulate: bool,
    lhs: &[f32],
    l: View,
    rhs: &[f32],
    r: View,
    scale: f32,
    parallelism: Parallelism,
) {
    assert!(
        d.rows == l.rows && d.cols == r.cols && l.cols == r.rows,
        "gemm: shapes {}x{} = {}x{} · {}x{}",
        d.rows,
        d.cols,
        l.rows,
        l.cols,
        r.rows,
        r.cols
    );
    d.check(dst.len(), "destination");
    assert!(d.is_injective(), "gemm: destination view {d:?} maps two positions to one element");
    if d.rows == 0 || d.cols == 0 {
        return;
    }
    if l.cols == 0 {
        if !accumulate {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    dst[d.offset + i * d.row_stride + j * d.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    l.check(lhs.len(), "left");
    r.check(rhs.len(), "right");
    let stride = |s: usize| isize::try_from(s).expect("gemm: stride beyond isize");
    // SAFETY: every index each view can form is inside its slice (checked above), the destination's
    // indices are distinct, and `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr().add(d.offset),
            stride(d.col_stride),
            stride(d.row_stride),
            accumulate,
            lhs.as_ptr().add(l.offset),
            stride(l.col_stride),
            stride(l.row_stride),
            rhs.as_ptr().add(r.offset),
            stride(r.col_stride),
            stride(r.row_stride),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(l: &[f32], (m, k): (usize, usize), r: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|t| l[i * k + t] * r[t * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn strided_views_multiply_like_the_dense_matrices() {
        let (m, k, n) = (5, 7, 3);
        let l: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let r: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&l, (m, k), &r, n);
        // rhs stored transposed (column-major) behind a 2-element prefix.
        let mut rt = vec![9f32; 2 + k * n];
        for t in 0..k {
            for j in 0..n {
                rt[2 + j * k + t] = r[t * n + j];
            }
        }
        let rv = View { offset: 2, rows: k, cols: n, row_stride: 1, col_stride: k };
        let mut dst = vec![1f32; m * n];
        gemm_f32(&mut dst, View::row_major(m, n), true, &l, View::row_major(m, k), &rt, rv, 2.0, Parallelism::None);
        for (got, want) in dst.iter().zip(&want) {
            assert!((got - (1.0 + 2.0 * want)).abs() < 1e-5, "{got} vs {want}");
        }
        gemm_f32(
            &mut dst,
            View::row_major(m, n),
            false,
            &l,
            View::row_major(m, k),
            &r,
            View::row_major(k, n),
            1.0,
            Parallelism::None,
        );
        for (got, want) in dst.iter().zip(&want) {
            assert!((got - want).abs() < 1e-5);
        }
    }

    #[test]
    #[should_panic(expected = "reaches index")]
    fn a_view_past_its_slice_is_refused() {
        let (l, r) = (vec![0f32; 6], vec![0f32; 6]);
        let mut dst = vec![0f32; 4];
        gemm_f32(
            &mut dst,
            View::row_major(2, 2),
            false,
            &l,
            View::row_major(2, 3),
            &r,
            View::row_major(3, 2).shifted(1),
            1.0,
            Parallelism::None,
        );
    }

    #[test]
    #[should_panic(expected = "maps two positions")]
    fn an_overlapping_destination_is_refused() {
        let (l, r) = (vec![0f32; 4], vec![0f32; 4]);
        let mut dst = vec![0f32; 8];
        let d = View { offset: 0, rows: 2, cols: 2, row_stride: 1, col_stride: 1 };
        gemm_f32(&mut dst, d, false, &l, View::row_major(2, 2), &r, View::row_major(2, 2), 1.0, Parallelism::None);
    }

    #[test]
    fn an_empty_depth_clears_or_keeps_the_destination() {
        let mut dst = vec![3f32; 4];
        let empty = |dst: &mut Vec<f32>, accumulate: bool| {
            let (l, r) = (View::row_major(2, 0), View::row_major(0, 2));
            gemm_f32(dst, View::row_major(2, 2), accumulate, &[], l, &[], r, 1.0, Parallelism::None);
        };
        empty(&mut dst, true);
        assert_eq!(dst, vec![3.0; 4]);
        empty(&mut dst, false);
        assert_eq!(dst, vec![0.0; 4]);
    }
}
