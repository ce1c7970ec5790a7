//! Once start-up has settled, the pages of code and read-only data that only start-up touched
//! (configuration, migrations, the key provider's libraries: libtss2 and the libcrypto it
//! loads are used at start-up alone) go back to the kernel. Loading the binary reads it whole
//! (readahead) and each fault maps its cached neighbourhood (fault-around), so without this
//! the idle process holds most of its file resident. After it, what serving runs faults back
//! in, and the resident set comes close to what the gateway uses (the kernel's large page
//! cache folios keep it coarser than that: docs/footprint.md, "Start-up pages").

use std::collections::BTreeSet;
use std::time::Duration;

use rustix::fs::{fadvise, Advice as FileAdvice};
use rustix::mm::{madvise, Advice};

/// Start-up goes on for a moment after the listeners open: the sinks connect, the first
/// housekeeping and sampling runs. Their pages are start-up's too.
const SETTLE: Duration = Duration::from_secs(5);

/// Waits for start-up to settle, then returns its pages on the blocking pool (the kernel
/// reclaims inside the calls: ~11 ms here, which the runtime's timers must not wait for).
pub(crate) async fn release_after_start_up() {
    tokio::time::sleep(SETTLE).await;
    let _ = tokio::task::spawn_blocking(release_start_up_pages).await;
}

struct Mapping<'a> {
    start: usize,
    len: usize,
    path: &'a str,
}

/// Read-only mappings of files, from `/proc/self/maps`.
fn read_only_file_mappings(maps: &str) -> Vec<Mapping<'_>> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (_offset, _device, inode) = (f.next()?, f.next()?, f.next()?);
            // The rest of the line, spaces included; no earlier field holds a '/'.
            let path = &line[line.find('/')?..];
            let writable = perms.as_bytes().get(1) == Some(&b'w');
            if writable || inode == "0" {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            let start = usize::from_str_radix(a, 16).ok()?;
            let end = usize::from_str_radix(b, 16).ok()?;
            (end > start).then_some(Mapping {
                start,
                len: end - start,
                path,
            })
        })
        .collect()
}

/// Unmaps start-up's pages and drops them from the page cache; logs what it did. Failure only
/// costs memory.
fn release_start_up_pages() {
    let maps = match std::fs::read_to_string("/proc/self/maps") {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read /proc/self/maps; start-up pages stay resident");
            return;
        }
    };
    let began = std::time::Instant::now();
    let mappings = read_only_file_mappings(&maps);
    let mut bytes = 0usize;
    for m in &mappings {
        // SAFETY: advice about residency only. The range is a mapping of this process, and a
        // non-writable file page paged out is read again from its file on the next access,
        // as after any reclaim under memory pressure: no byte the process sees changes.
        // `Random` first: a page faulted back in brings no readahead window with it.
        let advised = unsafe {
            madvise(m.start as *mut _, m.len, Advice::Random)
                .and_then(|()| madvise(m.start as *mut _, m.len, Advice::LinuxPageOut))
        };
        match advised {
            Ok(()) => bytes += m.len,
            Err(e) => tracing::debug!(error = %e, path = m.path, "MADV_PAGEOUT refused"),
        }
    }
    // Unmapped, the pages still sit in the page cache, and each later fault would map its
    // cached neighbours again. Dropping the files' unmapped cached pages ends that; pages any
    // process still maps are kept by the kernel.
    let files: BTreeSet<&str> = mappings.iter().map(|m| m.path).collect();
    for path in &files {
        let dropped = match std::fs::File::open(path) {
            Ok(f) => fadvise(&f, 0, None, FileAdvice::DontNeed).map_err(std::io::Error::from),
            Err(e) => Err(e),
        };
        if let Err(e) = dropped {
            tracing::debug!(error = %e, path, "cannot drop cached pages");
        }
    }
    tracing::debug!(
        mappings = mappings.len(),
        files = files.len(),
        bytes,
        took_us = began.elapsed().as_micros(),
        "start-up pages returned to the kernel"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_read_only_file_mappings_are_released() {
        let maps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 1234  /usr/bin/peat-gateway
55d0a0100000-55d0a0500000 r-xp 00100000 fd:01 1234  /usr/bin/peat-gateway
55d0a0500000-55d0a0540000 rw-p 00500000 fd:01 1234  /usr/bin/peat-gateway
55d0a0540000-55d0a0560000 rw-p 00000000 00:00 0     [heap]
7f0000000000-7f0000200000 r-xp 00000000 fd:01 99    /usr/lib/libc.so.6
7f0000200000-7f0000201000 r--p 00000000 fd:01 77    /opt/kit tools/lib x.so
7f0000300000-7f0000301000 r--p 00000000 00:00 0
7fff00000000-7fff00002000 r-xp 00000000 00:00 0     [vdso]
garbage line
";
        let found: Vec<(usize, usize, &str)> = read_only_file_mappings(maps)
            .iter()
            .map(|m| (m.start, m.len, m.path))
            .collect();
        assert_eq!(
            found,
            vec![
                (0x55d0a0000000, 0x100000, "/usr/bin/peat-gateway"),
                (0x55d0a0100000, 0x400000, "/usr/bin/peat-gateway"),
                (0x7f0000000000, 0x200000, "/usr/lib/libc.so.6"),
                (0x7f0000200000, 0x1000, "/opt/kit tools/lib x.so"),
            ]
        );
    }
}
