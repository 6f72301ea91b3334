//! The memory budget of a run when the caller sets none, shared by every
//! front end (the CLI's `--max-memory`, the Python package's calls) so both
//! make the same choice on the same machine.

/// The memory budget in bytes: `max_memory`, or a quarter of the memory
/// available now (MemAvailable), at most 1 GiB and at least 64 MiB.
pub fn memory_budget(max_memory: Option<usize>) -> usize {
    max_memory.unwrap_or_else(|| {
        let avail = resid_io::memory::available().map_or(4 << 30, |b| b as usize);
        (avail / 4).clamp(64 << 20, 1 << 30)
    })
}

/// Bytes of tensors coded (or decoded) together: a quarter of the budget,
/// leaving room for the coded copies and per-thread buffers.
pub fn batch_bytes(max_memory: Option<usize>) -> usize {
    (memory_budget(max_memory) / 4).max(16 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_budget_is_kept_and_batches_are_a_quarter_of_it() {
        assert_eq!(memory_budget(Some(1 << 30)), 1 << 30);
        assert_eq!(batch_bytes(Some(1 << 30)), 1 << 28);
        // Small budgets still batch at least 16 MiB (one tensor always runs).
        assert_eq!(batch_bytes(Some(1 << 20)), 16 << 20);
    }

    #[test]
    fn automatic_budget_is_clamped() {
        let b = memory_budget(None);
        assert!((64 << 20..=1 << 30).contains(&b), "{b}");
    }
}
