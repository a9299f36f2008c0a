//! The allocator's thresholds for a process that runs for weeks.
//!
//! glibc raises its mmap threshold each time a large block is freed, and its trim
//! threshold with it (to twice that): after the first tables and buffers of a session
//! came and went, up to ~5 MiB of freed memory could sit at the top of the heap before
//! it was given back. The node agent's RSS then stepped up and down by that much at
//! random moments of a steady load (seen in a 30-minute soak, 122 ↔ 127 MiB), which hides
//! a slow leak. Fixed thresholds stop the raising: blocks from 256 KiB up get pages of
//! their own, returned when freed, and at most 1 MiB stays at the heap's top.
//!
//! Freed memory inside the heap, between blocks still in use, is never given back by
//! glibc on its own. [`give_back`] (`malloc_trim`) returns the free pages of every arena;
//! each session calls it once a minute and when it ends.
//!
//! One arena for the whole process: each thread (the runtime, a session, its capture) had
//! an arena of its own, packets were allocated in one and freed in another, and in an
//! hour's soak RSS crept by half a MiB in 20 minutes of a session with the live heap flat
//! (+16.4 KiB/min fitted). With one arena a 30-minute session's RSS stayed within 0.4 MiB
//! after its first minutes, one transient sample apart (+6.8 KiB/min); the threads' own
//! caches (tcache) keep most allocations off its lock. Where `MALLOC_ARENA_MAX` is set in
//! the agent's environment, glibc has applied it and the agent leaves it (the operator's
//! choice, and the way to measure what the single arena costs).

/// Arenas glibc may create (the main one only).
const ARENA_MAX: i32 = 1;
/// Blocks of this size and more are mapped on their own.
const MMAP_THRESHOLD: i32 = 256 * 1024;
/// Free memory at the top of the heap beyond this is given back.
const TRIM_THRESHOLD: i32 = 1024 * 1024;

/// Fixes the allocator's thresholds and arenas (glibc only; elsewhere nothing to do); the
/// arenas only where `MALLOC_ARENA_MAX` did not set them. Returns whether the allocator
/// took them.
pub fn settle() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas_chosen = std::env::var_os("MALLOC_ARENA_MAX").is_some();
        // SAFETY: `mallopt` only sets allocator parameters; it is called once, before the
        // agent starts its threads, with parameters glibc documents.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && (arenas_chosen || libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) == 1)
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Gives the whole pages of freed memory in every arena back to the system (glibc only).
/// Returns whether any was given back.
pub fn give_back() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only releases free memory; it takes each arena's lock
        // itself, so it may run beside threads that allocate.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Bytes the allocator holds for live allocations: heap chunks in use and the blocks
/// mapped on their own (what a leak grows), `None` where the allocator cannot say. RSS
/// also counts freed memory not yet given back, and moves in steps with it.
#[must_use]
pub fn in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallinfo2` takes no argument and only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        u64::try_from(m.uordblks.saturating_add(m.hblkhd)).ok()
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_thresholds() {
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(super::settle());
        }
    }

    /// This process's resident memory, KiB.
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Blocks freed between blocks still in use stay resident until given back.
    #[test]
    fn freed_memory_between_live_blocks_is_given_back() {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return;
        }
        // 1024 blocks of 64 KiB (under the mmap threshold, so on the heap), each followed
        // by a small one that stays: freeing the big ones leaves 64 MiB of holes that
        // cannot merge with the heap's top.
        const N: usize = 1024;
        const BIG: usize = 64 << 10;
        let mut pins = Vec::with_capacity(N);
        let mut big = Vec::with_capacity(N);
        for i in 0..N {
            big.push(vec![u8::try_from(i % 251).unwrap() + 1; BIG]);
            pins.push(Box::new([i; 4]));
        }
        drop(big);
        let held = rss_kib();
        super::give_back();
        let after = rss_kib();
        // other tests allocate beside this one: a quarter of the holes is the bar
        assert!(
            after + 16 * 1024 <= held,
            "RSS {held} KiB before, {after} KiB after giving back"
        );
        assert_eq!(pins[N - 1][0], N - 1);
    }

    #[test]
    fn live_allocations_are_counted() {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return;
        }
        // The count is the whole process's, and other tests run beside this one: a block
        // far larger than what they hold (a few MiB) must show, with room for their churn.
        const BLOCK: u64 = 256 << 20;
        const SLACK: u64 = 64 << 20;
        let before = super::in_use().unwrap();
        let block = vec![1u8; usize::try_from(BLOCK).unwrap()];
        let during = super::in_use().unwrap();
        assert!(during + SLACK >= before + BLOCK, "{before} then {during}");
        drop(block);
        let after = super::in_use().unwrap();
        assert!(after + BLOCK <= during + SLACK, "{during} then {after}");
    }
}
