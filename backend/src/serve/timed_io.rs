//! The connection timers the HTTP/1.1 server needs and hyper has only as
//! one: hyper's header timer also runs while a kept-alive connection waits
//! for its next request, so "idle" and "slow headers" could not differ.
//!
//! [`TimedIo`] wraps a connection's socket and, with [`Phase`] (which the
//! service marks as each request begins and ends), closes it when
//! - a new connection sends no complete request head within
//!   `http.header_read_timeout` of being accepted;
//! - a kept-alive connection sends nothing for `http.idle_timeout`;
//! - a request head, once its first byte came, is not complete within
//!   `http.header_read_timeout`.
//!
//! While a request is served nothing here runs: bodies have their own
//! deadline (`app::body_deadline`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

#[derive(Debug, Clone, Copy)]
enum State {
    /// Waiting for the first byte of a request; `first` on a new connection.
    Waiting { since: Instant, first: bool },
    /// A request head is arriving.
    Head { since: Instant },
    /// A request is being served.
    Busy,
}

/// Where a connection is in its request cycle, shared by its socket and
/// its service.
#[derive(Clone)]
pub struct Phase(Arc<Mutex<State>>);

impl Phase {
    pub fn new() -> Self {
        Phase(Arc::new(Mutex::new(State::Waiting {
            since: Instant::now(),
            first: true,
        })))
    }

    fn set(&self, state: State) {
        if let Ok(mut current) = self.0.lock() {
            *current = state;
        }
    }

    fn get(&self) -> State {
        self.0.lock().map(|s| *s).unwrap_or(State::Busy)
    }

    /// A request's head is complete: it is being served.
    pub fn begin(&self) {
        self.set(State::Busy);
    }

    /// Its response is written out: the connection waits for the next.
    pub fn end(&self) {
        self.set(State::Waiting {
            since: Instant::now(),
            first: false,
        });
    }

    fn bytes_arrived(&self) {
        if let Ok(mut current) = self.0.lock() {
            // A new connection's first head counts from the accept; a
            // kept-alive one's from its first byte.
            match *current {
                State::Waiting { since, first: true } => *current = State::Head { since },
                State::Waiting { first: false, .. } => {
                    *current = State::Head {
                        since: Instant::now(),
                    }
                }
                State::Head { .. } | State::Busy => {}
            }
        }
    }
}

/// The two timeouts, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

impl Timeouts {
    fn deadline(self, state: State) -> Option<Instant> {
        match state {
            State::Waiting { since, first: true } | State::Head { since } => {
                Some(since + self.header)
            }
            State::Waiting {
                since,
                first: false,
            } => Some(since + self.idle),
            State::Busy => None,
        }
    }
}

/// A socket that fails its reads once the current phase's deadline passes.
pub struct TimedIo<S> {
    inner: S,
    phase: Phase,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
}

impl<S> TimedIo<S> {
    pub fn new(inner: S, phase: Phase, timeouts: Timeouts) -> Self {
        TimedIo {
            inner,
            phase,
            timeouts,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.phase.bytes_arrived();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some(deadline) = self.timeouts.deadline(self.phase.get()) else {
            return Poll::Pending;
        };
        if Instant::now() >= deadline {
            return Poll::Ready(Err(timed_out()));
        }
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_millis(200),
        idle: Duration::from_millis(700),
    };

    /// How long a read waits before it fails, in ms.
    async fn fails_after<S: AsyncRead + Unpin>(io: &mut TimedIo<S>) -> u128 {
        let started = Instant::now();
        let mut byte = [0u8; 1];
        let error = io.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        started.elapsed().as_millis()
    }

    #[tokio::test]
    async fn a_new_connection_gets_the_header_timeout_and_a_kept_alive_one_the_idle_one() {
        let (_client, server) = tokio::io::duplex(64);
        let phase = Phase::new();
        let mut io = TimedIo::new(server, phase.clone(), TIMEOUTS);
        let waited = fails_after(&mut io).await;
        assert!((200..450).contains(&waited), "{waited} ms");

        // After a request, waiting is allowed for the idle timeout.
        phase.begin();
        phase.end();
        let waited = fails_after(&mut io).await;
        assert!((700..950).contains(&waited), "{waited} ms");
    }

    #[tokio::test]
    async fn a_head_has_the_header_timeout_from_its_first_byte_and_serving_has_none() {
        let (mut client, server) = tokio::io::duplex(64);
        let phase = Phase::new();
        phase.begin();
        phase.end();
        let mut io = TimedIo::new(server, phase.clone(), TIMEOUTS);
        tokio::time::sleep(Duration::from_millis(600)).await;
        client.write_all(b"G").await.unwrap();
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await.unwrap();
        // One byte of a head: the rest must come within the header timeout
        // from it, however much of the idle timeout was left.
        let waited = fails_after(&mut io).await;
        assert!((200..450).contains(&waited), "{waited} ms");

        // A new connection's first head counts from the accept.
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = TimedIo::new(server, Phase::new(), TIMEOUTS);
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"G").await.unwrap();
        io.read_exact(&mut byte).await.unwrap();
        let waited = fails_after(&mut io).await;
        assert!(waited < 150, "{waited} ms");

        // Being served: no timer here at all.
        let (_client, server) = tokio::io::duplex(64);
        let phase = Phase::new();
        phase.begin();
        let mut io = TimedIo::new(server, phase, TIMEOUTS);
        let read = tokio::time::timeout(Duration::from_millis(1500), io.read(&mut byte)).await;
        assert!(read.is_err(), "the read was still waiting");
    }
}
