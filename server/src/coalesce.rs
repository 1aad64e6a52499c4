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
pub struct Coalesced<B: Body> {
    inner: B,
    /// Data copied, not yet handed on; one buffer, reused block after block.
    gathered: BytesMut,
    /// What came while data was gathered (trailers, an error): handed on after it.
    next: Option<Result<Frame<Bytes>, B::Error>>,
    /// The inner body ended: it is not polled again.
    done: bool,
}

// Nothing of it is pinned in place: it is moved freely whatever its error type.
impl<B: Body + Unpin> Unpin for Coalesced<B> {}

impl<B: Body> Coalesced<B> {
    /// `inner`'s data, copied as it comes.
    pub fn new(inner: B) -> Coalesced<B> {
        Coalesced {
            inner,
            gathered: BytesMut::new(),
            next: None,
            done: false,
        }
    }

    /// The data gathered, in a block of exactly its size; the buffer is kept for the next.
    fn hand_on(&mut self) -> Frame<Bytes> {
        let block = Bytes::copy_from_slice(&self.gathered);
        self.gathered.clear();
        Frame::data(block)
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
        if let Some(next) = this.next.take() {
            return Poll::Ready(Some(next));
        }
        loop {
            if this.gathered.len() >= BLOCK || (this.done && !this.gathered.is_empty()) {
                return Poll::Ready(Some(Ok(this.hand_on())));
            }
            if this.done {
                return Poll::Ready(None);
            }
            let other = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        this.gathered.extend_from_slice(&data);
                        continue;
                    }
                    Err(trailers) => Ok(trailers),
                },
                Poll::Ready(Some(Err(e))) => Err(e),
                Poll::Ready(None) => {
                    this.done = true;
                    continue;
                }
                // What was gathered waits for more: the inner body wakes this one when it comes
                // or ends.
                Poll::Pending => return Poll::Pending,
            };
            // Trailers or an error: after the data that came before them.
            if this.gathered.is_empty() {
                return Poll::Ready(Some(other));
            }
            this.next = Some(other);
            return Poll::Ready(Some(Ok(this.hand_on())));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.gathered.is_empty() && self.next.is_none() && (self.done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let inner = if self.done {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        };
        let gathered = self.gathered.len() as u64;
        // The upper bound first: a lower one above it is refused.
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + gathered);
        }
        hint.set_lower(inner.lower() + gathered);
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

    /// A body that sends `left` bytes, a frame each, then fails (ten more declared).
    struct Failing {
        left: usize,
    }

    impl Body for Failing {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            if self.left == 0 {
                return Poll::Ready(Some(Err("cut off")));
            }
            self.left -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.left as u64 + 10)
        }
    }

    #[test]
    fn data_gathered_goes_before_an_error_and_the_size_hint_counts_it() {
        let mut body = Coalesced::new(Failing { left: 100 });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert_eq!(body.size_hint().exact(), Some(110));
        let first = Pin::new(&mut body).poll_frame(&mut cx);
        let Poll::Ready(Some(Ok(frame))) = first else {
            panic!("the data first");
        };
        assert_eq!(frame.into_data().unwrap().len(), 100);
        let Poll::Ready(Some(Err(e))) = Pin::new(&mut body).poll_frame(&mut cx) else {
            panic!("then the error");
        };
        assert_eq!(e, "cut off");
        // Gathered data counts in the hint (the inner one's exact hint is not broken).
        let mut body = Coalesced::new(Failing { left: 100 });
        body.gathered.extend_from_slice(b"abc");
        assert_eq!(body.size_hint().exact(), Some(113));
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
