//! Attention on the CPU without the score matrix (the FlashAttention recurrence): for each tile of
//! query rows and each head, the keys are taken a tile at a time — scored with one GEMM, folded
//! into a running softmax (row maximum and denominator rescaled as tiles arrive), their values
//! accumulated with a second GEMM. Memory per task is one query tile's scores and outputs, however
//! long the sequence. Heads are read in place from the (B, N, H·D) projections and the output is
//! written in that layout, so the head split and merge copies disappear too.
//!
//! f32 only (the CPU path's precision); other dtypes and devices take the sliced path.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape};

use crate::cpu_storage::contiguous_f32;
use crate::matmul::{Parallelism, View, gemm_f32};
use rayon::prelude::*;

use super::softmax_rows;

/// Query rows per task: enough rows for the GEMMs to run at speed, enough tasks to fill the
/// thread pool (a 1024-token CFG pair gives 32).
const QUERY_TILE: usize = 64;
/// Keys per step of the recurrence: one tile of scores (64 × 256 floats = 64 KiB) stays in L2.
const KEY_TILE: usize = 256;

/// Multi-head attention on projected (B, N, H·D) queries and (B, M, H·D) keys and values.
pub(super) struct BlockedAttention {
    pub heads: usize,
    pub scale: f32,
    /// Added to the (N, M) scores of every batch row and head (e.g. CLIP's causal mask).
    pub mask: Option<Vec<f32>>,
}

impl CustomOp3 for BlockedAttention {
    fn name(&self) -> &'static str {
        "blocked-attention"
    }

    fn cpu_fwd(
        &self,
        q_s: &CpuStorage,
        q_l: &Layout,
        k_s: &CpuStorage,
        k_l: &Layout,
        v_s: &CpuStorage,
        v_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            contiguous_f32(q_s, q_l, "blocked attention", "q")?,
            contiguous_f32(k_s, k_l, "blocked attention", "k")?,
            contiguous_f32(v_s, v_l, "blocked attention", "v")?,
        );
        let (batch, n, width) = q_l.shape().dims3()?;
        let (kb, m, kw) = k_l.shape().dims3()?;
        if (kb, kw) != (batch, width) || v_l.shape().dims3()? != (batch, m, width) {
            candle_core::bail!(
                "blocked attention: q {:?}, k {:?}, v {:?} do not fit",
                q_l.shape(),
                k_l.shape(),
                v_l.shape()
            );
        }
        if self.heads == 0 || width % self.heads != 0 {
            candle_core::bail!("blocked attention: width {width} is not a multiple of {} heads", self.heads);
        }
        if let Some(mask) = &self.mask
            && mask.len() != n * m
        {
            candle_core::bail!("blocked attention: mask of {} values for {n}x{m} scores", mask.len());
        }
        let mut out = vec![0f32; batch * n * width];
        if n > 0 && width > 0 {
            out.par_chunks_mut(n * width).enumerate().for_each(|(b, batch_out)| {
                let (k, v) = (&k[b * m * width..(b + 1) * m * width], &v[b * m * width..(b + 1) * m * width]);
                let q = &q[b * n * width..(b + 1) * n * width];
                batch_out.par_chunks_mut(QUERY_TILE * width).enumerate().for_each(|(tile, out_rows)| {
                    let row0 = tile * QUERY_TILE;
                    let rows = out_rows.len() / width;
                    self.query_tile(&q[row0 * width..(row0 + rows) * width], k, v, row0, rows, m, width, out_rows);
                });
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, n, width))))
    }
}

impl BlockedAttention {
    /// Every head of `rows` query rows (starting at `row0`) against all `m` keys, into `out`
    /// ((rows, width), row-major). `q`, `k`, `v` are one batch row's (·, width) matrices.
    #[allow(clippy::too_many_arguments)]
    fn query_tile(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        row0: usize,
        rows: usize,
        m: usize,
        width: usize,
        out: &mut [f32],
    ) {
        let d = width / self.heads;
        let mut scores = vec![0f32; rows * KEY_TILE.min(m.max(1))];
        let mut acc = vec![0f32; rows * d];
        let mut row_max = vec![f32::NEG_INFINITY; rows];
        let mut denom = vec![0f32; rows];
        for h in 0..self.heads {
            let q_h = View { offset: h * d, rows, cols: d, row_stride: width, col_stride: 1 };
            acc.fill(0.0);
            row_max.fill(f32::NEG_INFINITY);
            denom.fill(0.0);
            let mut key0 = 0;
            while key0 < m {
                let keys = KEY_TILE.min(m - key0);
                let s = &mut scores[..rows * keys];
                // s (rows × keys) = scale · q_h (rows × d) · k_hᵀ (d × keys)
                let k_t = View { offset: key0 * width + h * d, rows: d, cols: keys, row_stride: 1, col_stride: width };
                gemm_f32(s, View::row_major(rows, keys), false, q, q_h, k, k_t, self.scale, Parallelism::None);
                if let Some(mask) = &self.mask {
                    for (i, row) in s.chunks_exact_mut(keys).enumerate() {
                        let mrow = &mask[(row0 + i) * m + key0..(row0 + i) * m + key0 + keys];
                        row.iter_mut().zip(mrow).for_each(|(x, mk)| *x += mk);
                    }
                }
                fold_scores(s, keys, &mut row_max, &mut denom, &mut acc, d);
                // acc (rows × d) += p (rows × keys) · v_h (keys × d)
                let v_h = View { offset: key0 * width + h * d, rows: keys, cols: d, row_stride: width, col_stride: 1 };
                gemm_f32(
                    &mut acc,
                    View::row_major(rows, d),
                    true,
                    s,
                    View::row_major(rows, keys),
                    v,
                    v_h,
                    1.0,
                    Parallelism::None,
                );
                key0 += keys;
            }
            for i in 0..rows {
                let inv = 1.0 / denom[i];
                let dst = &mut out[i * width + h * d..i * width + (h + 1) * d];
                dst.iter_mut().zip(&acc[i * d..(i + 1) * d]).for_each(|(o, a)| *o = a * inv);
            }
        }
    }
}

/// Turns one key tile's scores into unnormalised probabilities under each row's running maximum,
/// rescaling what rows already accumulated when their maximum grows (online softmax).
fn fold_scores(s: &mut [f32], keys: usize, row_max: &mut [f32], denom: &mut [f32], acc: &mut [f32], d: usize) {
    for (i, row) in s.chunks_exact_mut(keys).enumerate() {
        let tile_max = softmax_rows::row_max(row);
        let new_max = if tile_max > row_max[i] { tile_max } else { row_max[i] };
        if new_max == f32::NEG_INFINITY {
            // Every key so far is masked out: nothing to add yet.
            row.fill(0.0);
            continue;
        }
        let sum = softmax_rows::exp_shift_sum(row, new_max);
        let correction = softmax_rows::exp_nonpositive(row_max[i] - new_max);
        if correction != 1.0 {
            acc[i * d..(i + 1) * d].iter_mut().for_each(|a| *a *= correction);
        }
        denom[i] = denom[i] * correction + sum;
        row_max[i] = new_max;
    }
}
