//! A connection whose answers stop draining is closed: a client that never reads what the server
//! writes (thousands of requests pipelined and their answers left unread, or a pull it stopped
//! reading) would otherwise hold one of the server's connection slots for as long as it likes,
//! past the header and body deadlines, which count only what the client sends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long what the server writes to a connection may not move before the connection is
/// closed. A slow link drains all along; only a client that stopped reading waits this long.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// A stream whose writes fail (`TimedOut`) once none has moved for `stall`.
pub struct Draining<S> {
    inner: S,
    stall: Duration,
    /// Armed when a write first waits, cleared when one moves.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> Draining<S> {
    /// `inner`, its writes allowed to wait `stall` at most.
    pub fn new(inner: S, stall: Duration) -> Draining<S> {
        Draining {
            inner,
            stall,
            deadline: None,
        }
    }

    /// What a write that is waiting answers: still waiting, or the stall's error once its time
    /// is up (the timer registered with `cx`, so that the task wakes for it).
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let stall = self.stall;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A write's outcome: one that moved (or failed) disarms the deadline.
    fn moved<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.waiting(cx),
            done => {
                self.deadline = None;
                done
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Draining<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Draining<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.moved(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.moved(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.moved(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_no_one_reads_fails_after_the_stall_and_one_read_slowly_does_not() {
        let stall = Duration::from_millis(300);
        // A pipe whose other end holds 64 bytes and reads nothing.
        let (ours, theirs) = tokio::io::duplex(64);
        let mut draining = Draining::new(ours, stall);
        let started = std::time::Instant::now();
        let error = draining
            .write_all(&[7; 1024])
            .await
            .expect_err("the write stalls");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= stall);
        drop(theirs);

        // Read a little at a time, slower than the writes come but never stopped for the stall:
        // every byte goes.
        let (ours, mut theirs_slow) = tokio::io::duplex(64);
        let mut draining = Draining::new(ours, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            while got < 1024 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                got += theirs_slow.read(&mut buf).await.expect("read");
            }
            got
        });
        draining.write_all(&[7; 1024]).await.expect("drained");
        assert_eq!(reader.await.expect("reader"), 1024);
    }
}
