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
    /// The file ends with a whole line: known after a write succeeded, checked again after
    /// the sink starts (a crash may have cut a write) or a write failed.
    whole: bool,
}

impl FileSink {
    pub fn new(dir: PathBuf, name: &str) -> Self {
        Self {
            dir,
            name: format!("{name}.jsonl"),
            whole: false,
        }
    }
}

/// Cuts a torn last line (a write a crash or an I/O error broke off, never acknowledged) so
/// the next batch starts on a line of its own.
fn cut_torn_tail(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        tracing::warn!(file = %path.display(), bytes = len - end,
            "the file sink's last line was torn (a crash or a failed write): cut before appending");
        f.set_len(end)?;
        f.sync_data()?;
    }
    Ok(())
}

fn write_batch(dir: PathBuf, name: String, lines: Vec<u8>, whole: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(&name);
    if !whole {
        cut_torn_tail(&path)?;
    }
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
        let (dir, name, whole) = (self.dir.clone(), self.name.clone(), self.whole);
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || write_batch(dir, name, lines, whole))
                .await
                .map_err(|e| SinkError::Transient(format!("file writer task: {e}")))
                .and_then(|r| {
                    r.map_err(|e| SinkError::Transient(format!("writing the file sink: {e}")))
                });
            self.whole = written.is_ok();
            written
        })
    }

    fn target(&self) -> String {
        self.dir.join(&self.name).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_cut_before_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        // The last: a torn line longer than one read of the tail.
        let long = [&b"{\"a\":1}\n"[..], &[b'x'; 10_000]].concat();
        for (before, after) in [
            (&b"{\"a\":1}\n{\"b\""[..], &b"{\"a\":1}\n{\"c\":3}\n"[..]),
            (b"{\"half", b"{\"c\":3}\n"),
            (b"", b"{\"c\":3}\n"),
            (b"{\"a\":1}\n", b"{\"a\":1}\n{\"c\":3}\n"),
            (&long, b"{\"a\":1}\n{\"c\":3}\n"),
        ] {
            std::fs::write(&path, before).unwrap();
            let batch = b"{\"c\":3}\n".to_vec();
            write_batch(dir.path().into(), "s.jsonl".into(), batch, false).unwrap();
            let got = std::fs::read(&path).unwrap();
            assert_eq!(got, after, "{:?}", String::from_utf8_lossy(before));
        }
    }

    /// A sink that starts on a file a crash left torn writes its first batch on a line of
    /// its own, and the next ones after it.
    #[test]
    fn a_starting_sink_cuts_what_a_crash_left_torn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"torn").unwrap();
        let event = crate::cdc::ce_json::test_record("d", Some("{}"), false, 1);
        let d = Delivery::test("gw", event, "e-1", crate::tenant::ContentMode::Structured);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut sink = FileSink::new(dir.path().into(), "s");
        for _ in 0..2 {
            rt.block_on(sink.deliver(std::slice::from_ref(&d))).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], r#"{"a":1}"#);
        assert!(
            lines[1..].iter().all(|l| l.as_bytes() == &d.body[..]),
            "{text}"
        );
    }
}
