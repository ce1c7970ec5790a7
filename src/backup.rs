//! Backups of a running gateway: a consistent snapshot of `state.redb` and `cdc.redb` (each
//! copied inside one read transaction while writers go on) and the TPM-sealed KEK when there
//! is one, in one file: a magic line, a JSON header (schema versions, KEK id, each part's size
//! and SHA-256), then the parts. Restoring checks the header against this build and every
//! part's hash before anything reaches the data directory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cdc::Outbox;
use crate::store::Store;

const MAGIC: &[u8] = b"PEATGWBK\n";
const FORMAT: u32 = 1;
/// Files beside the databases that a restore needs (the TPM's sealed KEK and a rotation's).
const KEY_FILES: &[&str] = &["kek.tpm", "kek.tpm.next", "kek.tpm.previous"];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Outbox(#[from] crate::cdc::CdcError),
    #[error("{0}")]
    Invalid(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    pub format: u32,
    pub created_at: String,
    pub gateway_version: String,
    pub state_schema: u32,
    pub outbox_schema: u32,
    pub kek_id: String,
    pub parts: Vec<Part>,
}

fn sha256_file(path: &Path) -> Result<(u64, String), BackupError> {
    let mut f = File::open(path).map_err(io(format!("reading {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io("reading a part"))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Writes a backup of the running gateway's stores to `dest`, through files in `work` (a
/// directory on the same disk, removed afterwards). Blocks on disk I/O: `spawn_blocking`.
pub fn write(
    state: &Store,
    outbox: &Outbox,
    kek_id: &str,
    work: &Path,
    dest: &Path,
) -> Result<Header, BackupError> {
    std::fs::create_dir_all(work).map_err(io(format!("creating {}", work.display())))?;
    let result = write_in(state, outbox, kek_id, work, dest);
    let _ = std::fs::remove_dir_all(work);
    result
}

fn write_in(
    state: &Store,
    outbox: &Outbox,
    kek_id: &str,
    work: &Path,
    dest: &Path,
) -> Result<Header, BackupError> {
    let state_copy = work.join("state.redb");
    let outbox_copy = work.join("cdc.redb");
    let state_schema = state.snapshot_to(&state_copy)?;
    let outbox_schema = outbox.snapshot_to(&outbox_copy)?;
    let mut files: Vec<(String, PathBuf)> = vec![
        ("state.redb".into(), state_copy),
        ("cdc.redb".into(), outbox_copy),
    ];
    for name in KEY_FILES {
        let p = state.dir().join(name);
        if p.exists() {
            files.push(((*name).to_owned(), p));
        }
    }
    let mut parts = Vec::new();
    for (name, path) in &files {
        let (bytes, sha256) = sha256_file(path)?;
        parts.push(Part {
            name: name.clone(),
            bytes,
            sha256,
        });
    }
    let header = Header {
        format: FORMAT,
        created_at: crate::cdc::rfc3339_ms(crate::tenant::now_ms()),
        gateway_version: env!("CARGO_PKG_VERSION").to_owned(),
        state_schema,
        outbox_schema,
        kek_id: kek_id.to_owned(),
        parts,
    };
    let mut out = File::create(dest).map_err(io(format!("creating {}", dest.display())))?;
    out.write_all(MAGIC).map_err(io("writing the backup"))?;
    let json = serde_json::to_string(&header).map_err(|e| BackupError::Invalid(e.to_string()))?;
    out.write_all(json.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .map_err(io("writing the backup"))?;
    for (_, path) in &files {
        let mut f = File::open(path).map_err(io(format!("reading {}", path.display())))?;
        std::io::copy(&mut f, &mut out).map_err(io("writing the backup"))?;
    }
    out.sync_all().map_err(io("syncing the backup"))?;
    Ok(header)
}

/// The backup's header, and a reader positioned at its first part.
pub fn open(path: &Path) -> Result<(Header, BufReader<File>), BackupError> {
    let f = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut r = BufReader::new(f);
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic).map_err(|_| {
        BackupError::Invalid(format!("{} is not a peat-gateway backup", path.display()))
    })?;
    if magic != MAGIC {
        return Err(BackupError::Invalid(format!(
            "{} is not a peat-gateway backup",
            path.display()
        )));
    }
    let mut line = String::new();
    r.read_line(&mut line).map_err(io("reading the header"))?;
    let header: Header = serde_json::from_str(line.trim_end())
        .map_err(|e| BackupError::Invalid(format!("the backup's header is unreadable: {e}")))?;
    if header.format != FORMAT {
        return Err(BackupError::Invalid(format!(
            "backup format {} is not this gateway's ({FORMAT})",
            header.format
        )));
    }
    Ok((header, r))
}

/// Checks every part's size and hash without writing anything.
pub fn verify(path: &Path) -> Result<Header, BackupError> {
    read_parts(path, None)
}

/// Writes every part of the backup at `path` into `dir`, checking each part's size and hash;
/// an incomplete or altered backup leaves an error, never a file that passed for good.
pub fn extract(path: &Path, dir: &Path) -> Result<Header, BackupError> {
    read_parts(path, Some(dir))
}

fn read_parts(path: &Path, dir: Option<&Path>) -> Result<Header, BackupError> {
    let (header, mut r) = open(path)?;
    for part in &header.parts {
        if part.name.contains('/') || part.name.starts_with('.') {
            return Err(BackupError::Invalid(format!("part name {:?}", part.name)));
        }
        let mut out = match dir {
            Some(d) => {
                let dest = d.join(&part.name);
                Some(File::create(&dest).map_err(io(format!("creating {}", dest.display())))?)
            }
            None => None,
        };
        let mut h = Sha256::new();
        let mut left = part.bytes;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            r.read_exact(&mut buf[..want]).map_err(|_| {
                BackupError::Invalid(format!("the backup ends inside {} (truncated)", part.name))
            })?;
            h.update(&buf[..want]);
            if let Some(o) = out.as_mut() {
                o.write_all(&buf[..want])
                    .map_err(io(format!("writing {}", part.name)))?;
            }
            left -= want as u64;
        }
        if hex::encode(h.finalize()) != part.sha256 {
            return Err(BackupError::Invalid(format!(
                "{} does not match its hash: the backup was altered or damaged",
                part.name
            )));
        }
        if let Some(o) = out {
            o.sync_all().map_err(io(format!("syncing {}", part.name)))?;
        }
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(io("reading the backup"))? != 0 {
        return Err(BackupError::Invalid(
            "the backup holds more than its header lists".into(),
        ));
    }
    Ok(header)
}
