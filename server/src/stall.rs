//! A connection whose answers stop draining is closed: a client that never reads what the server
//! writes (thousands of requests pipelined and their answers left unread, or a pull it stopped
//! reading) would otherwise hold one of the server's connection slots for as long as it likes,
//! past the header and body deadlines, which count only what the client sends. Nor may it keep
//! the slot by reading a few bytes now and then: the time writes wait adds up until
//! [`MIN_DRAIN`] bytes have moved.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long what the server writes to a connection may wait, in all, before [`MIN_DRAIN`]
/// bytes of it move. A slow link drains all along; only a client that stopped reading, or reads
/// a trickle, waits this long.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// Bytes that must move for the waits so far to be forgiven: 16 KiB a minute of waiting, about
/// 270 bytes a second, far below the slowest phone link's rate.
pub const MIN_DRAIN: usize = 16 * 1024;

/// A stream whose writes fail (`TimedOut`) once they have waited `stall` in all since
/// [`MIN_DRAIN`] bytes last moved.
pub struct Draining<S> {
    inner: S,
    stall: Duration,
    min_drain: usize,
    /// Time writes waited since the last [`MIN_DRAIN`] bytes moved.
    waited: Duration,
    /// Bytes moved since then.
    moved: usize,
    /// The wait under way: since when, and the timer for the end of the stall.
    waiting: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl<S> Draining<S> {
    /// `inner`, its writes allowed to wait `stall` in all between [`MIN_DRAIN`] bytes moved.
    pub fn new(inner: S, stall: Duration) -> Draining<S> {
        Draining {
            inner,
            stall,
            min_drain: MIN_DRAIN,
            waited: Duration::ZERO,
            moved: 0,
            waiting: None,
        }
    }

    /// What a write that is waiting answers: still waiting, or the stall's error once its time
    /// is up (the timer registered with `cx`, so that the task wakes for it).
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let left = self.stall.saturating_sub(self.waited);
        let (_, timer) = self.waiting.get_or_insert_with(|| {
            let now = Instant::now();
            (now, Box::pin(tokio::time::sleep_until(now + left)))
        });
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read too little of the answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A wait ended with `bytes` moved: its time counts until enough have.
    fn took(&mut self, bytes: usize) {
        if let Some((since, _)) = self.waiting.take() {
            self.waited += since.elapsed();
        }
        self.moved += bytes;
        if self.moved >= self.min_drain {
            self.moved = 0;
            self.waited = Duration::ZERO;
        }
    }

    /// A write's outcome, in bytes moved.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Pending => self.waiting(cx),
            Poll::Ready(Ok(n)) => {
                self.took(n);
                Poll::Ready(Ok(n))
            }
            failed => {
                self.waiting = None;
                failed
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
        this.wrote(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.waiting(cx),
            Poll::Ready(done) => {
                this.took(0);
                Poll::Ready(done)
            }
        }
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

    #[tokio::test]
    async fn a_client_reading_a_trickle_is_closed_once_its_waits_add_up_to_the_stall() {
        let stall = Duration::from_millis(300);
        // 16 bytes every 50 ms: each read frees a write, none waits the stall alone.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut draining = Draining::new(ours, stall);
        draining.min_drain = 4096;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match theirs.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
            }
        });
        let started = std::time::Instant::now();
        let error = draining
            .write_all(&[7; 8192])
            .await
            .expect_err("the trickle is cut");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= stall);
        drop(draining);
        let got = reader.await.expect("reader");
        assert!(got < 4096, "cut before the minimum moved: {got}");
    }
}
