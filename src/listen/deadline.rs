//! A connection's I/O with two deadlines: a write that makes no progress for `stall` (a
//! client that sends requests but never reads the answers) and a connection on which nothing
//! is read or written for `idle` both end the connection, so neither holds a slot for long.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct Deadlines<T> {
    inner: T,
    stall: Duration,
    idle: Duration,
    /// Armed while a write waits on the client.
    write_wait: Option<Pin<Box<Sleep>>>,
    /// Pushed forward by every byte read or written.
    quiet: Pin<Box<Sleep>>,
    last_reset: Instant,
}

impl<T> Deadlines<T> {
    pub fn new(inner: T, stall: Duration, idle: Duration) -> Self {
        Self {
            inner,
            stall,
            idle,
            write_wait: None,
            quiet: Box::pin(tokio::time::sleep(idle)),
            last_reset: Instant::now(),
        }
    }

    fn progressed(&mut self) {
        // Resetting a timer on every small read or write costs more than it buys.
        let now = Instant::now();
        if now.duration_since(self.last_reset) > Duration::from_millis(250) {
            self.quiet.as_mut().reset(now + self.idle);
            self.last_reset = now;
        }
    }

    fn expired(e: &'static str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }

    /// Polls the idle deadline; an error once it passed.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.quiet.as_mut().poll(cx) {
            Poll::Ready(()) => Err(Self::expired("connection idle too long")),
            Poll::Pending => Ok(()),
        }
    }

    fn write_result<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.write_wait = None;
                if r.is_ok() {
                    self.progressed();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let w = self
                    .write_wait
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if w.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Self::expired("the client does not read its answers")));
                }
                Poll::Pending
            }
        }
    }
}

use std::future::Future as _;

impl<T: AsyncRead + Unpin> AsyncRead for Deadlines<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlines<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_result(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_result(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_result(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
