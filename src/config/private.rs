//! The data directory is private: created 0700 with every file 0600 whatever the caller's
//! umask, looser modes found at start-up tightened with a log line, and a directory others
//! can write refused (what is in it could have been replaced).

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

/// From now on this process creates files 0600 and directories 0700.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates `dir` (0700) if needed; refuses one that others may write.
pub fn ensure_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            format!(
                "{} cannot be created ({e}); create it or choose a writable directory",
                dir.display()
            )
        })?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| format!("{} cannot be read ({e})", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by other users (mode {:o}): its files could have been replaced; check them, then `chmod 700 {}`",
            dir.display(),
            mode & 0o777,
            dir.display()
        ));
    }
    Ok(())
}

/// Takes every permission from group and others in `dir` and below (directories 0700,
/// files 0600 or less); returns what it changed as (path, old mode, new mode).
pub fn tighten(dir: &Path) -> std::io::Result<Vec<(std::path::PathBuf, u32, u32)>> {
    let mut changed = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        visit(&d, &mut changed)?;
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                todo.push(entry.path());
            } else if ft.is_file() {
                visit(&entry.path(), &mut changed)?;
            }
            // Sockets and links are left alone: the API socket has its own mode setting.
        }
    }
    Ok(changed)
}

fn visit(p: &Path, changed: &mut Vec<(std::path::PathBuf, u32, u32)>) -> std::io::Result<()> {
    let mode = std::fs::metadata(p)?.permissions().mode() & 0o7777;
    let tight = mode & 0o700;
    if tight != mode {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(tight))?;
        changed.push((p.to_path_buf(), mode, tight));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_modes_are_tightened_and_a_shared_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = d.join("state.redb");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            ensure_private_dir(&d).is_ok(),
            "readable by others is tightened, not refused"
        );
        let changed = tighten(&d).unwrap();
        assert_eq!(changed.len(), 2, "{changed:?}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&d), mode(&f)), (0o700, 0o600));
        assert!(tighten(&d).unwrap().is_empty());
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&d).unwrap_err();
        assert!(
            e.contains("writable by other users") && e.contains("chmod 700"),
            "{e}"
        );
    }
}
