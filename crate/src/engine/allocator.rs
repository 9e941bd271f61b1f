//! The allocator settings the engine runs with. glibc hands large freed blocks back to the kernel (blocks over
//! its mmap threshold are unmapped; a heap's free top is trimmed), so every prefill chunk faulted its
//! activations in again page by page, zeroed by the kernel. The engine keeps freed memory for reuse instead:
//! peak RSS is unchanged (the next chunk reuses what the last one freed), memory is no longer returned between
//! requests. Process-wide, set once at the first model load; a no-op on other C libraries.

/// Blocks up to this size come from the heap (glibc's upper limit for the mmap threshold: 32 MiB on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Free memory a heap keeps at its top before trimming: more than any engine keeps in flight.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;

pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes glibc's tunables; it is thread-safe.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        });
    }
}
