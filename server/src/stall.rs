//! What moves too slowly is cut. A connection whose answers stop draining is closed: a client
//! that never reads what the server writes (thousands of requests pipelined and their answers
//! left unread, or a pull it stopped reading) would otherwise hold one of the server's connection
//! slots for as long as it likes, past the header and body deadlines, which count only what the
//! client sends. A request body that trickles in ends its request (`408`): a few bytes now and
//! then on many connections (a sign-in's body, sent before any account is known) would otherwise
//! hold every slot for the body deadline. Neither may keep going on a trickle: the time it waits
//! adds up until [`MIN_DRAIN`] bytes have moved.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long what the server writes to a connection may wait, in all, before [`MIN_DRAIN`]
/// bytes of it move. A slow link drains all along; only a client that stopped reading, or reads
/// a trickle, waits this long.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// How long the server may wait for a request body's bytes, in all, before [`MIN_DRAIN`] bytes
/// of it arrive: about 800 bytes a second while it waits, far below the slowest phone link's
/// rate (a sign-in's body comes in one packet; a push's 16 KiB blocks in well under a second
/// on a 2G link).
pub const BODY_STALL: Duration = Duration::from_secs(20);

/// Bytes that must move for the waits so far to be forgiven: 16 KiB a [`WRITE_STALL`] of
/// waiting for answers (about 270 bytes a second), a [`BODY_STALL`] for a body.
pub const MIN_DRAIN: usize = 16 * 1024;

/// The time a stream has waited since [`MIN_DRAIN`] bytes last moved, and the timer that ends
/// it at the stall.
struct Clock {
    stall: Duration,
    min_drain: usize,
    /// Time waited since the last [`MIN_DRAIN`] bytes moved.
    waited: Duration,
    /// Bytes moved since then.
    moved: usize,
    /// The wait under way: since when, and the timer for the end of the stall.
    waiting: Option<(Instant, Pin<Box<Sleep>>)>,
}

impl Clock {
    fn new(stall: Duration) -> Clock {
        Clock {
            stall,
            min_drain: MIN_DRAIN,
            waited: Duration::ZERO,
            moved: 0,
            waiting: None,
        }
    }

    /// Whether a wait under way has reached the stall (its timer registered with `cx`, so
    /// that the task wakes for it).
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let left = self.stall.saturating_sub(self.waited);
        let (_, timer) = self.waiting.get_or_insert_with(|| {
            let now = Instant::now();
            (now, Box::pin(tokio::time::sleep_until(now + left)))
        });
        timer.as_mut().poll(cx).is_ready()
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
}

/// A stream whose writes fail (`TimedOut`) once they have waited `stall` in all since
/// [`MIN_DRAIN`] bytes last moved.
pub struct Draining<S> {
    inner: S,
    clock: Clock,
}

impl<S> Draining<S> {
    /// `inner`, its writes allowed to wait `stall` in all between [`MIN_DRAIN`] bytes moved.
    pub fn new(inner: S, stall: Duration) -> Draining<S> {
        Draining {
            inner,
            clock: Clock::new(stall),
        }
    }

    /// What a write that is waiting answers: still waiting, or the stall's error once its time
    /// is up.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if self.clock.stalled(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read too little of the answer",
            )));
        }
        Poll::Pending
    }

    fn took(&mut self, bytes: usize) {
        self.clock.took(bytes);
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
                self.clock.waiting = None;
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

/// A request body whose reads end in an error (and mark its request as stalled) once they have
/// waited `stall` in all since [`MIN_DRAIN`] bytes last arrived. Only the waits for the client
/// count: a handler that reads nothing (a request refused before its body) waits for no one.
pub struct Arriving<B> {
    inner: B,
    clock: Clock,
    stalled: Arc<AtomicBool>,
}

/// A request body that stopped arriving.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
pub struct BodyStalled;

impl<B> Arriving<B> {
    /// `inner`, its reads allowed to wait `stall` in all between [`MIN_DRAIN`] bytes arrived;
    /// `stalled` is set when they have waited longer.
    pub fn new(inner: B, stall: Duration, stalled: Arc<AtomicBool>) -> Arriving<B> {
        Arriving {
            inner,
            clock: Clock::new(stall),
            stalled,
        }
    }
}

impl<B> Body for Arriving<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.clock.stalled(cx) {
                    this.stalled.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyStalled.into())));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                let bytes = match &frame {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
                    _ => 0,
                };
                this.clock.took(bytes);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every request's body the body stall of `stall` ([`Arriving`]), and answers `408` for
/// a request whose body stalled, whatever its handler made of the failed read.
pub async fn arriving(
    axum::extract::State(stall): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let stalled = Arc::new(AtomicBool::new(false));
    let request =
        request.map(|body| axum::body::Body::new(Arriving::new(body, stall, Arc::clone(&stalled))));
    let response = next.run(request).await;
    if stalled.load(Ordering::Relaxed) {
        return axum::response::IntoResponse::into_response(
            axum::http::StatusCode::REQUEST_TIMEOUT,
        );
    }
    response
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
        draining.clock.min_drain = 4096;
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

    /// A body fed from a channel: a frame a message, ended when the channel closes.
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// Sends `chunks` of `size` bytes, one every `every`, into a body read to its end through
    /// [`Arriving`] with `stall`: the bytes read, or the failure, and whether it was marked.
    async fn read_fed(
        chunks: usize,
        size: usize,
        every: Duration,
        stall: Duration,
    ) -> (Result<usize, String>, bool) {
        let (send, receive) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for _ in 0..chunks {
                tokio::time::sleep(every).await;
                if send.send(Bytes::from(vec![7; size])).await.is_err() {
                    return;
                }
            }
        });
        let stalled = Arc::new(AtomicBool::new(false));
        let body = Arriving::new(Fed(receive), stall, Arc::clone(&stalled));
        let read = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX)
            .await
            .map(|b| b.len())
            .map_err(|e| std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string));
        (read, stalled.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_body_sent_a_trickle_at_a_time_fails_once_its_waits_add_up_and_a_steady_one_arrives()
    {
        let stall = Duration::from_millis(300);
        // 8 bytes every 50 ms: no wait is near the stall alone, together they pass it.
        let started = std::time::Instant::now();
        let (read, stalled) = read_fed(100, 8, Duration::from_millis(50), stall).await;
        assert_eq!(read, Err(BodyStalled.to_string()));
        assert!(stalled);
        assert!(started.elapsed() >= stall);
        // 8 KiB every 50 ms, 64 KiB in all: longer than the stall, but 16 KiB arrive well
        // within each stall of waiting, so the waits are forgiven.
        let (read, stalled) = read_fed(8, 8 * 1024, Duration::from_millis(50), stall).await;
        assert_eq!(read, Ok(64 * 1024));
        assert!(!stalled);
    }
}
