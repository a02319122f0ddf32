//! Fewer writes per response: each gRPC connection's socket lets the answers of the streams
//! that are ready share one `writev`, as grpc-go's writer does.
//!
//! hyper runs every HTTP/2 stream as its own task. The first stream to answer wakes the
//! connection task, and tokio's LIFO slot runs it next, so it writes that one response before
//! the other streams (already queued on the worker) have answered: one syscall per response
//! (docs/performance.md). Here the connection's first write of a round yields once instead:
//! the task wakes itself and returns `Pending`, which puts it at the back of its worker's
//! queue, behind those streams; when it comes back, h2 writes everything they buffered in one
//! go. The write after the yield, and every write until the next flush, go straight through,
//! so a round is delayed by one trip through the run queue and never more.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll},
};

use futures_util::{Stream, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// A connection's socket whose first write after each flush yields once (module doc).
#[derive(Debug)]
pub struct CoalescedWrites<T> {
    inner: T,
    /// This round's yield is spent: write until the next flush.
    yielded: bool,
}

/// `incoming`'s connections, each with its writes coalesced.
pub fn coalesced(
    incoming: TcpIncoming,
) -> impl Stream<Item = io::Result<CoalescedWrites<TcpStream>>> {
    incoming.map(|conn| {
        conn.map(|inner| CoalescedWrites {
            inner,
            yielded: false,
        })
    })
}

impl<T> CoalescedWrites<T> {
    /// `Pending` (and woken at once) the first time in a round; `Ready` after.
    fn yield_once(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CoalescedWrites<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.yield_once(cx));
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.yield_once(cx));
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.inner).poll_flush(cx);
        if flushed.is_ready() {
            this.yielded = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CoalescedWrites<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

/// The caller's address, as for a bare socket: the middleware reads it to tell callers apart.
impl Connected for CoalescedWrites<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, pin::pin};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_first_write_of_a_round_yields_once_and_nothing_is_lost() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = CoalescedWrites {
            inner: near,
            yielded: false,
        };
        for round in ["first", "second"] {
            let mut first_polls = 0;
            let written = poll_fn(|cx| {
                first_polls += 1;
                Pin::new(&mut io).poll_write(cx, round.as_bytes())
            })
            .await
            .unwrap();
            assert_eq!(
                (written, first_polls),
                (round.len(), 2),
                "{round}: yields once"
            );
            // Until the flush, writes go straight through.
            let more = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"+"));
            assert!(matches!(
                futures_util::poll!(pin!(more)),
                Poll::Ready(Ok(1))
            ));
            io.flush().await.unwrap();
        }
        drop(io);
        let mut got = String::new();
        far.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "first+second+");
    }
}
