//! Request bodies as they come off a connection, copied into blocks of their own. hyper hands a
//! body's data out as slices of its read buffer: a slice kept (an extractor gathering the whole
//! body keeps every one) keeps the buffer's block, and the next read takes a new block of 8 KiB,
//! so a body sent a byte at a time would hold 8 KiB a byte. Here each slice is copied as it
//! comes and let go, and the copies are handed on in blocks of [`BLOCK`] bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use bytes::BytesMut;
use hyper::body::{Body, Frame, SizeHint};

/// Most bytes gathered before they are handed on.
pub const BLOCK: usize = 16 * 1024;

/// A body whose data is copied into blocks of its own.
#[derive(Debug)]
pub struct Coalesced<B> {
    inner: B,
    gathered: BytesMut,
    /// Trailers that came while data was gathered: handed on after it.
    trailers: Option<Frame<Bytes>>,
}

impl<B> Coalesced<B> {
    /// `inner`'s data, copied as it comes.
    pub fn new(inner: B) -> Coalesced<B> {
        Coalesced {
            inner,
            gathered: BytesMut::new(),
            trailers: None,
        }
    }

    fn hand_on(&mut self) -> Frame<Bytes> {
        Frame::data(self.gathered.split().freeze())
    }
}

impl<B> Body for Coalesced<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        loop {
            if this.gathered.len() >= BLOCK {
                return Poll::Ready(Some(Ok(this.hand_on())));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.gathered.extend_from_slice(&data),
                    Err(trailers) if this.gathered.is_empty() => {
                        return Poll::Ready(Some(Ok(trailers)));
                    }
                    Err(trailers) => {
                        this.trailers = Some(trailers);
                        return Poll::Ready(Some(Ok(this.hand_on())));
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) if this.gathered.is_empty() => return Poll::Ready(None),
                Poll::Ready(None) => return Poll::Ready(Some(Ok(this.hand_on()))),
                // What was gathered waits for more: the inner body wakes this one when it comes
                // or ends.
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.gathered.is_empty() && self.trailers.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let gathered = self.gathered.len() as u64;
        hint.set_lower(hint.lower() + gathered);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + gathered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body of frames handed out one a poll, with a `Pending` between two (as data arriving
    /// over a connection does).
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        waiting: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.waiting = !self.waiting;
            if self.waiting {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready(self.frames.pop_front().map(Ok))
        }
    }

    /// Every frame `body` hands on, polled to its end.
    fn drain(mut body: impl Body<Data = Bytes> + Unpin) -> Vec<Frame<Bytes>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        loop {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => out.push(frame),
                Poll::Ready(None) => return out,
                Poll::Ready(Some(Err(_))) => panic!("an error"),
                Poll::Pending => {}
            }
        }
    }

    #[test]
    fn a_body_of_single_bytes_is_handed_on_whole_in_blocks_and_its_trailers_after_it() {
        let sent: Vec<u8> = (0..40_000u32).map(|n| (n % 251) as u8).collect();
        let mut frames: VecDeque<Frame<Bytes>> = sent
            .iter()
            .map(|b| Frame::data(Bytes::copy_from_slice(&[*b])))
            .collect();
        let mut trailers = axum::http::HeaderMap::new();
        trailers.insert("x-check", axum::http::HeaderValue::from_static("1"));
        frames.push_back(Frame::trailers(trailers));
        let handed = drain(Coalesced::new(Frames {
            frames,
            waiting: false,
        }));
        let (data, rest): (Vec<_>, Vec<_>) = handed.into_iter().partition(Frame::is_data);
        let data: Vec<Bytes> = data
            .into_iter()
            .filter_map(|f| f.into_data().ok())
            .collect();
        assert_eq!(data.concat(), sent);
        // Blocks, the last one whatever was left.
        assert!(data[..data.len() - 1].iter().all(|d| d.len() == BLOCK));
        assert_eq!(data.len(), sent.len().div_ceil(BLOCK));
        assert_eq!(rest.len(), 1);
        assert!(
            rest[0]
                .trailers_ref()
                .is_some_and(|t| t.contains_key("x-check"))
        );
        // An empty body stays empty.
        let none = drain(Coalesced::new(Frames {
            frames: VecDeque::new(),
            waiting: false,
        }));
        assert!(none.is_empty());
    }
}
