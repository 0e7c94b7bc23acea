//! Scaled dot-product attention without an unbounded score matrix.
//!
//! At 512x512 the first UNet level attends over 4096 tokens: one full score tensor for a CFG
//! batch with 8 heads would be 2*8*4096*4096 floats (1 GiB). On the CPU in f32, [`blocked`]
//! never forms it (query tiles × key tiles with an online softmax). Elsewhere the scores are
//! sliced over (batch x head) and, if needed, query rows, each slice under [`MAX_SCORE_ELEMENTS`].

mod blocked;
mod softmax_rows;

use candle_core::{DType, Result, Tensor};

/// Upper bound on elements of one score slice (64 Mi floats = 256 MiB in f32).
const MAX_SCORE_ELEMENTS: usize = 1 << 26;

/// Multi-head attention on already projected inputs.
///
/// `q`: (B, N, H*D), `k`/`v`: (B, M, H*D) → (B, N, H*D). `mask` is added to the (N, M) scores
/// (e.g. a causal mask of -inf). Scores and softmax run in f32 whatever the input dtype.
pub fn multi_head_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    if q.device().is_cpu() && q.dtype() == DType::F32 && k.dtype() == DType::F32 && v.dtype() == DType::F32 {
        blocked_attention(q, k, v, heads, mask)
    } else {
        sliced_attention(q, k, v, heads, mask, MAX_SCORE_ELEMENTS)
    }
}

/// The CPU f32 path: see [`blocked`].
fn blocked_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let head_dim = q.dim(2)? / heads.max(1);
    let op = blocked::BlockedAttention {
        heads,
        scale: (1.0 / (head_dim as f64).sqrt()) as f32,
        mask: mask.map(|m| m.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()).transpose()?,
    };
    q.contiguous()?.apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)
}

/// The sliced path whatever the device (the benchmark's "before" beside [`multi_head_attention`]).
pub fn sliced_multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    sliced_attention(q, k, v, heads, mask, MAX_SCORE_ELEMENTS)
}

/// [`multi_head_attention`] with an explicit bound on the elements of one score slice.
fn sliced_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
    max_elements: usize,
) -> Result<Tensor> {
    let (batch, n, width) = q.dims3()?;
    let m = k.dim(1)?;
    let head_dim = width / heads;
    let dtype = q.dtype();
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        t.reshape((batch, len, heads, head_dim))?
            .transpose(1, 2)?
            .reshape((batch * heads, len, head_dim))?
            .to_dtype(DType::F32)?
            .contiguous()
    };
    let scale = 1.0 / (head_dim as f64).sqrt();
    let q = (split(q, n)? * scale)?;
    let k_t = split(k, m)?.transpose(1, 2)?.contiguous()?;
    let v = split(v, m)?;
    let mask = mask.map(|m| m.to_dtype(DType::F32)).transpose()?;

    let per_head = n * m;
    let rows = if per_head <= max_elements { n } else { (max_elements / m).max(1) };
    let heads_per_slice = (max_elements / (rows * m)).max(1);

    let mut head_chunks = Vec::new();
    let mut h0 = 0;
    while h0 < batch * heads {
        let hn = heads_per_slice.min(batch * heads - h0);
        let (q_h, k_h, v_h) = (q.narrow(0, h0, hn)?, k_t.narrow(0, h0, hn)?, v.narrow(0, h0, hn)?);
        let mut row_chunks = Vec::new();
        let mut r0 = 0;
        while r0 < n {
            let rn = rows.min(n - r0);
            let mut scores = q_h.narrow(1, r0, rn)?.matmul(&k_h)?;
            if let Some(mask) = &mask {
                scores = scores.broadcast_add(&mask.narrow(0, r0, rn)?)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            row_chunks.push(probs.matmul(&v_h)?);
            r0 += rn;
        }
        head_chunks.push(if row_chunks.len() == 1 { row_chunks.remove(0) } else { Tensor::cat(&row_chunks, 1)? });
        h0 += hn;
    }
    let out = if head_chunks.len() == 1 { head_chunks.remove(0) } else { Tensor::cat(&head_chunks, 0)? };
    out.reshape((batch, heads, n, head_dim))?.transpose(1, 2)?.reshape((batch, n, width))?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Naive single-head reference computed element by element in f64.
    fn reference(q: &[Vec<f32>], k: &[Vec<f32>], v: &[Vec<f32>]) -> Vec<Vec<f64>> {
        let d = q[0].len() as f64;
        q.iter()
            .map(|qi| {
                let s: Vec<f64> = k
                    .iter()
                    .map(|kj| qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() / d.sqrt())
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                (0..v[0].len()).map(|c| e.iter().zip(v).map(|(w, vj)| w / z * vj[c] as f64).sum()).collect()
            })
            .collect()
    }

    #[test]
    fn matches_naive_single_head_attention() -> Result<()> {
        // Deterministic pseudo-random inputs: (N=5, M=7, D=3).
        let val = |i: usize| ((i * 7919 % 97) as f32 / 97.0) - 0.5;
        let mk = |rows: usize, off: usize| -> Vec<Vec<f32>> {
            (0..rows).map(|r| (0..3).map(|c| val(off + r * 3 + c)).collect()).collect()
        };
        let (q, k, v) = (mk(5, 0), mk(7, 100), mk(7, 200));
        let to_t = |x: &Vec<Vec<f32>>| Tensor::new(x.clone(), &Device::Cpu)?.unsqueeze(0);
        let out = multi_head_attention(&to_t(&q)?, &to_t(&k)?, &to_t(&v)?, 1, None)?.squeeze(0)?.to_vec2::<f32>()?;
        for (row, exp) in out.iter().zip(reference(&q, &k, &v)) {
            for (a, b) in row.iter().zip(exp) {
                assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn blocked_attention_matches_the_sliced_path() -> Result<()> {
        // Shapes that leave partial query and key tiles (70 = 64 + 6 rows, 300 = 256 + 44 keys),
        // one and several heads, with and without a mask that hides whole key tiles of some rows.
        let dev = Device::Cpu;
        for (batch, n, m, width, heads, masked) in
            [(2, 70, 300, 48, 8, false), (1, 9, 6, 16, 4, true), (2, 300, 300, 40, 1, true), (2, 130, 77, 64, 8, false)]
        {
            let q = Tensor::randn(0f32, 1.0, (batch, n, width), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (batch, m, width), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (batch, m, width), &dev)?;
            let mask = masked.then(|| {
                let values: Vec<f32> = (0..n)
                    .flat_map(|i| (0..m).map(move |j| if j * n > (i + 1) * m { f32::NEG_INFINITY } else { 0.0 }))
                    .collect();
                Tensor::from_vec(values, (n, m), &dev)
            });
            let mask = mask.transpose()?;
            let sliced = sliced_attention(&q, &k, &v, heads, mask.as_ref(), usize::MAX)?;
            let blocked = blocked_attention(&q, &k, &v, heads, mask.as_ref())?;
            let diff = (sliced - blocked)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            // Outputs are averages of unit-variance values: a wrong tile is off by ~0.1, rounding by ~1e-7.
            assert!(diff < 1e-5, "({batch}, {n}, {m}, {width}, {heads}, {masked}): differs by {diff}");
        }
        Ok(())
    }

    #[test]
    fn slicing_does_not_change_the_result() -> Result<()> {
        // B=2, 4 heads, N=9 queries, M=6 keys; a budget of 12 elements forces 2-row query slices
        // and one head per slice. The causal-style mask checks that mask rows follow the slices.
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 9, 16), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (2, 6, 16), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (2, 6, 16), &dev)?;
        let mask: Vec<f32> =
            (0..9).flat_map(|i| (0..6).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(mask, (9, 6), &dev)?;
        let whole = sliced_attention(&q, &k, &v, 4, Some(&mask), usize::MAX)?;
        let sliced = sliced_attention(&q, &k, &v, 4, Some(&mask), 12)?;
        let diff = (whole - sliced)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "sliced attention differs by {diff}");
        Ok(())
    }
}
