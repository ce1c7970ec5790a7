//! glibc's allocator, set before any thread starts: at most two arenas. By default each thread
//! that allocates (the database writers, the blocking pool) gets an arena of its own, up to
//! eight per core, and what is freed stays in the arena that held it: draining a 1 M event
//! backlog peaked at 32–33 MiB PSS with them, 22.6–23.0 MiB with two, at the same drain and
//! ingest rates (docs/footprint.md). An operator's `GLIBC_TUNABLES` arena setting wins.

/// Limits the arenas unless `GLIBC_TUNABLES` sets them.
pub(crate) fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if !tuned {
            // SAFETY: called first in `main`, before any other thread exists; mallopt only
            // records a parameter of the allocator.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
    }
}
