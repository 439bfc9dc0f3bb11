//! Connecting to a host with several addresses, the way RFC 8305 ("Happy Eyeballs")
//! describes: the addresses alternate between IPv6 and IPv4, and the next attempt starts
//! when the previous one failed or after a short delay, whichever comes first; the first
//! connection made wins and the other attempts are dropped.
//!
//! Trying the addresses one after the other instead (what `TcpStream::connect` does)
//! leaves a receiver deaf for the whole connect timeout when the first address is
//! black-holed, as IPv6 is on many networks that announce it and do not route it.
//!
//! Why not hyper-util's `HttpConnector` (`set_happy_eyeballs_timeout`), as the HTTP
//! client uses: it splits the addresses by family and tries each family's one after the
//! other, giving each address the connect timeout divided by their number, with the other
//! family started after the delay. Between families that is the same; within one family a
//! black hole costs half the timeout instead of the attempt delay. Measured on loopback
//! (black holes made with listeners whose accept queue is full; connect timeout 20 s,
//! delay 250 ms; hyper-util 0.1.21):
//!
//! | addresses, in resolver order | `connect_first` | `HttpConnector` |
//! | --- | --- | --- |
//! | `::1` (black hole), `127.0.0.1` | 254 ms | 252 ms |
//! | `127.0.0.2` (black hole), `127.0.0.1` | 252 ms | 10.0 s |
//! | `::1`, `127.0.0.2` (black holes), `127.0.0.1` | 507 ms | 10.25 s |
//!
//! Memory is no reason either way: both hand over a `TcpStream` (40 bytes; hyper-util's
//! `TokioIo` wrapper adds none), so an idle connection costs the same; while connecting,
//! `connect_first`'s future is 256 bytes inline, `HttpConnector`'s a 16-byte box. The
//! other reasons: hyper-util folds DNS failures into its connect error, where the
//! listener reports [`ConnectionError::Resolve`](crate::ConnectionError::Resolve) apart,
//! and it dials real sockets only, where this takes the connect function and is tested
//! on a paused clock with fake peers (below).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

/// How long an attempt runs alone before the next address is tried beside it (RFC 8305
/// recommends 250 ms).
pub(crate) const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// The addresses in the order they are tried: alternating families, starting with the
/// family of the first address, each family in its own order.
pub(crate) fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (mut lead, mut follow): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for addr in addrs {
        if addr.is_ipv6() == first_v6 {
            lead.push(*addr);
        } else {
            follow.push(*addr);
        }
    }
    let mut lead = lead.into_iter();
    let mut follow = follow.into_iter();
    let mut out = Vec::with_capacity(addrs.len());
    loop {
        match (lead.next(), follow.next()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Connects to the first of `addrs` (in [`interleave`] order) that answers, starting an
/// attempt every `delay` or as soon as the previous one failed. The error, when every
/// attempt failed, is the last one.
pub(crate) async fn connect_first<T, F, Fut>(
    addrs: &[SocketAddr],
    delay: Duration,
    mut connect: F,
) -> io::Result<T>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut queue = interleave(addrs).into_iter();
    let mut running = FuturesUnordered::new();
    let Some(first) = queue.next() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the host name has no address",
        ));
    };
    running.push(connect(first));
    let mut last_error = None;
    loop {
        let waiting = queue.len() > 0;
        tokio::select! {
            Some(result) = running.next() => match result {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    last_error = Some(error);
                    if let Some(addr) = queue.next() {
                        running.push(connect(addr));
                    } else if running.is_empty() {
                        break;
                    }
                }
            },
            () = tokio::time::sleep(delay), if waiting => {
                if let Some(addr) = queue.next() {
                    running.push(connect(addr));
                }
            }
            else => break,
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no connection attempt finished")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    fn v4(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 5228))
    }

    fn v6(last: u16) -> SocketAddr {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, last], 5228))
    }

    #[test]
    fn families_alternate_starting_with_the_first() {
        assert_eq!(
            interleave(&[v6(1), v6(2), v6(3), v4(1)]),
            [v6(1), v4(1), v6(2), v6(3)]
        );
        assert_eq!(
            interleave(&[v4(1), v6(1), v4(2), v6(2)]),
            [v4(1), v6(1), v4(2), v6(2)]
        );
        assert_eq!(interleave(&[v4(1), v4(2)]), [v4(1), v4(2)]);
        assert!(interleave(&[]).is_empty());
    }

    /// How each fake address behaves: answers after a while, refuses after a while, or
    /// never answers (a black hole).
    #[derive(Clone, Copy)]
    enum Peer {
        Answers(Duration),
        Refuses(Duration),
        BlackHole,
    }

    /// Connects with fake peers on tokio's paused clock; returns the result and, for each
    /// attempt, its address and when it started.
    async fn dial(
        peers: &[(SocketAddr, Peer)],
    ) -> (
        io::Result<SocketAddr>,
        Duration,
        Vec<(SocketAddr, Duration)>,
    ) {
        let start = Instant::now();
        let started = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&started);
        let table: Vec<(SocketAddr, Peer)> = peers.to_vec();
        let addrs: Vec<SocketAddr> = peers.iter().map(|(addr, _)| *addr).collect();
        let result = connect_first(&addrs, ATTEMPT_DELAY, move |addr| {
            log.lock().unwrap().push((addr, start.elapsed()));
            let peer = table.iter().find(|(a, _)| *a == addr).map(|(_, p)| *p);
            async move {
                match peer {
                    Some(Peer::Answers(after)) => {
                        tokio::time::sleep(after).await;
                        Ok(addr)
                    }
                    Some(Peer::Refuses(after)) => {
                        tokio::time::sleep(after).await;
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            addr.to_string(),
                        ))
                    }
                    Some(Peer::BlackHole) | None => std::future::pending().await,
                }
            }
        })
        .await;
        let attempts = started.lock().unwrap().clone();
        (result, start.elapsed(), attempts)
    }

    #[tokio::test(start_paused = true)]
    async fn a_black_holed_first_address_costs_the_attempt_delay_not_the_timeout() {
        let ms = Duration::from_millis;
        let (result, took, attempts) =
            dial(&[(v6(1), Peer::BlackHole), (v4(1), Peer::Answers(ms(20)))]).await;
        assert_eq!(result.unwrap(), v4(1));
        assert_eq!(took, ms(270));
        assert_eq!(attempts, [(v6(1), ms(0)), (v4(1), ms(250))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_starts_the_next_attempt_at_once() {
        let ms = Duration::from_millis;
        let (result, took, attempts) = dial(&[
            (v6(1), Peer::Refuses(ms(5))),
            (v4(1), Peer::Refuses(ms(5))),
            (v6(2), Peer::Answers(ms(5))),
        ])
        .await;
        assert_eq!(result.unwrap(), v6(2));
        assert_eq!(took, ms(15));
        assert_eq!(attempts, [(v6(1), ms(0)), (v4(1), ms(5)), (v6(2), ms(10))]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_to_answer_wins_even_if_started_later() {
        let ms = Duration::from_millis;
        let (result, took, _) = dial(&[
            (v6(1), Peer::Answers(ms(900))),
            (v4(1), Peer::Answers(ms(100))),
        ])
        .await;
        assert_eq!(result.unwrap(), v4(1));
        assert_eq!(took, ms(350));
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_address_fails_the_last_error_is_returned() {
        let ms = Duration::from_millis;
        let (result, _, attempts) = dial(&[
            (v4(1), Peer::Refuses(ms(400))),
            (v4(2), Peer::Refuses(ms(1))),
        ])
        .await;
        let error = result.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(error.to_string(), v4(1).to_string());
        assert_eq!(attempts.len(), 2);
        let (result, _, attempts) = dial(&[]).await;
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(attempts.is_empty());
    }

    #[tokio::test]
    async fn real_sockets_a_refused_address_then_a_listening_one() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open_addr = open.local_addr().unwrap();
        let closed_addr = {
            let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            closed.local_addr().unwrap()
        };
        let stream = connect_first(
            &[closed_addr, open_addr],
            ATTEMPT_DELAY,
            tokio::net::TcpStream::connect,
        )
        .await
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open_addr);
        let error = connect_first(
            &[closed_addr],
            ATTEMPT_DELAY,
            tokio::net::TcpStream::connect,
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
}
