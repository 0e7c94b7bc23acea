//! glibc malloc tuning for the engine's allocation pattern.
//!
//! Every UNet step allocates and frees many tensors of several MiB. By default glibc serves them
//! with fresh `mmap`s and returns them to the OS on free, so the kernel zeroes new pages on every
//! step: measured as ~21% of a CPU UNet step at 256² (docs/benchmarks.md: 8.2 s → 5.1 s per step
//! with these settings, identical output). Keeping big blocks in the heap avoids that.

/// Applies the tuning once, at start, unless the operator set glibc's own `MALLOC_*_` variables.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_")) {
            return;
        }
        // SAFETY: mallopt only changes allocator parameters; called before the runner starts.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        }
    }
}
