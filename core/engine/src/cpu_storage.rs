//! Reading candle CPU storage from custom ops (`CustomOp2`/`CustomOp3`), which receive the raw
//! storage and its layout.

use candle_core::{CpuStorage, Layout, Result};

/// The f32 elements of a contiguous tensor (`op` and `what` name it in the error otherwise).
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: {what} must be contiguous"),
    }
}
