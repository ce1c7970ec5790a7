//! The few parts of RESP (the Redis protocol) the Redis Streams sink needs: commands as
//! arrays of bulk strings, written in a pipeline, and replies read one by one. A dozen lines of
//! protocol, so the sink owns its pipelining, timeouts and acknowledgement accounting.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest reply accepted (a stream entry id or a short error; tests read whole streams).
const MAX_BULK: usize = 64 * 1024 * 1024;
const MAX_DEPTH: usize = 8;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// Appends one command to `out`.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A connection: the stream, buffered for reading.
pub struct Conn<S> {
    io: BufReader<S>,
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("RESP: {what}"))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    pub fn new(io: S) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    /// Writes commands already encoded (a pipeline) and flushes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.get_mut().write_all(bytes).await?;
        self.io.get_mut().flush().await
    }

    /// One command and its reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.send(&out).await?;
        self.reply().await
    }

    /// The next reply.
    pub async fn reply(&mut self) -> std::io::Result<Reply> {
        self.reply_at(0).await
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_BULK as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(bad("line without CRLF"));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| bad("line is not UTF-8"))
    }

    fn reply_at(
        &mut self,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + '_>>
    {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(bad("nested too deep"));
            }
            let line = self.line().await?;
            let (kind, rest) = line.split_at(1.min(line.len()));
            let int = |s: &str| s.parse::<i64>().map_err(|_| bad("malformed length"));
            match kind {
                "+" => Ok(Reply::Simple(rest.to_owned())),
                "-" => Ok(Reply::Error(rest.to_owned())),
                ":" => Ok(Reply::Int(int(rest)?)),
                "$" => {
                    let n = int(rest)?;
                    if n < 0 {
                        return Ok(Reply::Bulk(None));
                    }
                    let n = usize::try_from(n).map_err(|_| bad("malformed length"))?;
                    if n > MAX_BULK {
                        return Err(bad("reply too large"));
                    }
                    let mut buf = vec![0u8; n + 2];
                    self.io.read_exact(&mut buf).await?;
                    buf.truncate(n);
                    Ok(Reply::Bulk(Some(buf)))
                }
                "*" => {
                    let n = int(rest)?;
                    if n < 0 {
                        return Ok(Reply::Array(None));
                    }
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.reply_at(depth + 1).await?);
                    }
                    Ok(Reply::Array(Some(items)))
                }
                _ => Err(bad("unknown reply type")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_encode_and_replies_decode() {
        let mut out = Vec::new();
        encode(&mut out, &[b"XADD", b"s", b"*", b"id", b"a\r\nb"]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$2\r\nid\r\n$4\r\na\r\nb\r\n"
        );
        let (client, mut server) = tokio::io::duplex(1024);
        server
            .write_all(b"$15\r\n1700000000000-0\r\n-ERR no\r\n:5\r\n*2\r\n+OK\r\n$-1\r\n")
            .await
            .unwrap();
        let mut c = Conn::new(client);
        assert_eq!(
            c.reply().await.unwrap(),
            Reply::Bulk(Some(b"1700000000000-0".to_vec()))
        );
        assert_eq!(c.reply().await.unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(c.reply().await.unwrap(), Reply::Int(5));
        assert_eq!(
            c.reply().await.unwrap(),
            Reply::Array(Some(vec![Reply::Simple("OK".into()), Reply::Bulk(None)]))
        );
        drop(server);
        assert!(c.reply().await.is_err());
    }
}
