//! JSON lines on local disk, one CloudEvent per line, fsync'd before acknowledging, rotated
//! by size (`name.jsonl` → `name.jsonl.1` → … `name.jsonl.3`).

use std::io::Write as _;
use std::path::PathBuf;

use super::{DeliverFuture, Delivery, Sink, SinkError};

const ROTATE_BYTES: u64 = 64 * 1024 * 1024;
const KEEP: u32 = 3;

pub struct FileSink {
    dir: PathBuf,
    name: String,
}

impl FileSink {
    pub fn new(dir: PathBuf, name: &str) -> Self {
        Self {
            dir,
            name: format!("{name}.jsonl"),
        }
    }
}

fn write_batch(dir: PathBuf, name: String, lines: Vec<u8>) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(&name);
    if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) >= ROTATE_BYTES {
        for i in (1..KEEP).rev() {
            let from = dir.join(format!("{name}.{i}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("{name}.{}", i + 1)))?;
            }
        }
        std::fs::rename(&path, dir.join(format!("{name}.1")))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    f.write_all(&lines)?;
    f.sync_data()
}

impl Sink for FileSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Delivery]) -> DeliverFuture<'a> {
        let mut lines = Vec::with_capacity(batch.iter().map(|d| d.body.len() + 1).sum());
        for d in batch {
            lines.extend_from_slice(&d.body);
            lines.push(b'\n');
        }
        let (dir, name) = (self.dir.clone(), self.name.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || write_batch(dir, name, lines))
                .await
                .map_err(|e| SinkError::Transient(format!("file writer task: {e}")))?
                .map_err(|e| SinkError::Transient(format!("writing the file sink: {e}")))
        })
    }

    fn target(&self) -> String {
        self.dir.join(&self.name).display().to_string()
    }
}
