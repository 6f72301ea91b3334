//! The memory this machine has free now, as the kernel estimates it: the
//! figure every memory budget and every "can this be held whole" check uses.

/// `MemAvailable` of `/proc/meminfo` in bytes, when the system says.
pub fn available() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let l = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

#[cfg(test)]
mod tests {
    #[test]
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let m = super::available().expect("MemAvailable");
            assert!(m > 1 << 20, "{m}");
        }
    }
}
