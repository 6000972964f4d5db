//! The tokio driver on a real socket: junk datagrams are counted and ignored, offers still
//! work, and a stopped driver says so.

mod common;

use std::time::Duration;

use comet_sfu::driver::{self, DriverOptions};
use comet_sfu::{AnswerOptions, EndpointConfig, Error, ParticipantId};
use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep};

/// The driver answers an offer, announcing its socket `to` as the host candidate.
async fn assert_serves(sfu: &driver::SfuHandle, to: std::net::SocketAddr) {
    let a = sfu
        .accept_offer(common::CHROME, AnswerOptions::default())
        .await
        .unwrap();
    let host = format!("{} {} typ host", to.ip(), to.port());
    assert!(a.sdp.contains(&host), "no {host} in {}", a.sdp);
}

/// Sends 400 datagrams of junk (every first byte, lengths 0..300) to `to`, waits (with a
/// deadline) until the driver has read them, and checks that every one was dropped and
/// counted, with no event and nothing sent.
async fn junk_is_dropped(
    sfu: &driver::SfuHandle,
    events: &mut driver::Events,
    to: std::net::SocketAddr,
) {
    let junk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut x: u32 = 0x1234_5678;
    for k in 0..400usize {
        // xorshift: deterministic junk of every first byte and length.
        let len = k % 300;
        let mut d = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            d.push(x as u8);
        }
        if let Some(b) = d.first_mut() {
            *b = k as u8;
        }
        junk.send_to(&d, to).await.unwrap();
        if k % 16 == 0 {
            // Single-threaded runtime: let the driver read before the socket buffer fills.
            tokio::task::yield_now().await;
        }
    }
    let end = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = sfu.metrics().await.unwrap();
        if m.datagrams_in >= 398 || Instant::now() > end {
            break m;
        }
        sleep(Duration::from_millis(10)).await;
    };
    // Two of them are empty datagrams; count them or not, everything else arrives.
    assert!(m.datagrams_in >= 398, "{m:?}");
    assert_eq!(
        m.datagrams_in,
        m.malformed_dropped + m.unknown_dropped,
        "{m:?}"
    );
    assert_eq!((m.datagrams_out, m.participants, m.panics), (0, 0, 0));
    assert!(events.try_recv().is_err(), "junk produced an event");
}

#[tokio::test]
async fn junk_datagrams_over_udp() {
    let (sfu, mut events, task) = driver::bind(
        "127.0.0.1:0".parse().unwrap(),
        EndpointConfig::default(),
        DriverOptions::default(),
    )
    .await
    .unwrap();
    let to = sfu.local_addr();
    junk_is_dropped(&sfu, &mut events, to).await;

    // Still serving.
    assert_serves(&sfu, to).await;

    // Errors come back through the handle.
    assert_eq!(
        sfu.close(ParticipantId(999)).await,
        Err(Error::UnknownParticipant(ParticipantId(999)))
    );
    sfu.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("driver stops")
        .unwrap();
    assert_eq!(sfu.metrics().await, Err(Error::DriverGone));
}

#[tokio::test]
async fn wildcard_bind_needs_candidates() {
    let r = driver::bind(
        "0.0.0.0:0".parse().unwrap(),
        EndpointConfig::default(),
        DriverOptions::default(),
    )
    .await;
    assert!(r.is_err(), "a wildcard address cannot be announced");
}

/// The driver on a thread of its own: it serves offers, reports its socket (the receive buffer
/// it was granted, no drops), and stops when the task it returned is aborted.
#[tokio::test]
async fn a_dedicated_driver_serves_and_stops_with_its_task() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = socket.local_addr().unwrap();
    let config = EndpointConfig {
        candidates: vec![to],
        ..Default::default()
    };
    let endpoint = comet_sfu::Endpoint::new(config).unwrap();
    let (sfu, _events, task) =
        driver::spawn_dedicated(socket, endpoint, DriverOptions::default()).unwrap();
    assert_serves(&sfu, to).await;
    let m = sfu.metrics().await.unwrap();
    assert_eq!((m.participants, m.socket_drops), (1, 0), "{m:?}");
    // At least what Linux gives by default; as much as asked when rmem_max allows it.
    assert!(m.socket_recv_buffer >= 200_000, "{m:?}");

    task.abort();
    tokio::time::timeout(Duration::from_secs(10), sfu.closed())
        .await
        .expect("the driver thread did not stop");
    assert_eq!(sfu.metrics().await, Err(Error::DriverGone));
}

/// A driver of two shards: the socket's reader drops junk itself (counted in the shards'
/// total), offers go to both shards, and aborting its task stops every thread.
#[tokio::test]
async fn a_sharded_driver_drops_junk_serves_and_stops_with_its_task() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = socket.local_addr().unwrap();
    let endpoints = (0..2)
        .map(|index| {
            comet_sfu::Endpoint::new(EndpointConfig {
                candidates: vec![to],
                shard: comet_sfu::Shard { index, count: 2 },
                ..Default::default()
            })
            .unwrap()
        })
        .collect();
    let (sfu, mut events, task) =
        driver::spawn_sharded(socket, endpoints, DriverOptions::default()).unwrap();
    junk_is_dropped(&sfu, &mut events, to).await;

    assert_serves(&sfu, to).await;
    assert_serves(&sfu, to).await;
    let m = sfu.metrics().await.unwrap();
    assert_eq!((m.participants, m.socket_drops), (2, 0), "{m:?}");
    assert!(m.socket_recv_buffer >= 200_000, "{m:?}");
    assert_eq!(
        sfu.close(ParticipantId(999)).await,
        Err(Error::UnknownParticipant(ParticipantId(999)))
    );
    // One participant per shard: ids 2 (shard 0) and 3 (shard 1).
    sfu.close(ParticipantId(2)).await.unwrap();
    sfu.close(ParticipantId(3)).await.unwrap();
    assert_eq!(sfu.metrics().await.unwrap().participants, 0);

    task.abort();
    tokio::time::timeout(Duration::from_secs(10), sfu.closed())
        .await
        .expect("the shard threads did not stop");
    assert_eq!(sfu.metrics().await, Err(Error::DriverGone));
}

/// Endpoints that are not shards 0..n of n are refused.
#[test]
fn a_sharded_driver_needs_its_shards_in_order() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = socket.local_addr().unwrap();
    let ep = |index, count| {
        comet_sfu::Endpoint::new(EndpointConfig {
            candidates: vec![to],
            shard: comet_sfu::Shard { index, count },
            ..Default::default()
        })
        .unwrap()
    };
    let r = driver::spawn_sharded(socket, vec![ep(1, 2), ep(0, 2)], DriverOptions::default());
    assert_eq!(
        r.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
}

/// Video has a queue of its own and commands come first: an offer sent after a backlog of
/// video batches is answered before that backlog is written (with one queue for both it came
/// after the last packet).
#[tokio::test]
async fn an_offer_does_not_wait_behind_queued_video() {
    const BATCHES: usize = 64;
    const PACKETS: usize = 64;
    let (sfu, _events, _task) = driver::bind(
        "127.0.0.1:0".parse().unwrap(),
        EndpointConfig::default(),
        DriverOptions {
            video_batches: BATCHES,
            ..DriverOptions::default()
        },
    )
    .await
    .unwrap();
    // Fill the video queue before the driver task runs (this test's runtime has one thread and
    // the queue has room, so nothing here yields). Every write is to nobody: each is refused
    // and counted, which shows how far the driver got.
    let nobody = ParticipantId(4242);
    for _ in 0..BATCHES {
        let batch = (0..PACKETS)
            .map(|k| driver::VideoWrite {
                id: nobody,
                payload: vec![0x65; 1000].into(),
                timestamp: k as u32 * 3000,
                marker: true,
            })
            .collect();
        sfu.write_video_batch(batch).await.unwrap();
    }
    // The offer and a metrics snapshot are queued together behind that backlog; the driver
    // takes the snapshot when it gets to the command, so it shows how much video was written
    // before the commands were served. (The driver only yields to this task once it has
    // nothing ready, so the test cannot look earlier itself.)
    let (answer, m) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(
            sfu.accept_offer(common::CHROME, AnswerOptions::default()),
            sfu.metrics()
        )
    })
    .await
    .expect("the offer is answered");
    assert!(answer.is_ok(), "{answer:?}");
    let m = m.unwrap();
    let all = (BATCHES * PACKETS) as u64;
    assert!(
        m.writes_refused <= (2 * PACKETS) as u64,
        "the commands waited for queued video writes (of {all}): {m:?}"
    );
    assert_eq!(m.participants_accepted, 1, "the offer came first: {m:?}");
    // The rest is still written (and refused) afterwards: nothing was dropped.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let m = sfu.metrics().await.unwrap();
        if m.writes_refused == all {
            break;
        }
        assert!(Instant::now() < end, "video writes lost: {m:?}");
        tokio::task::yield_now().await;
    }
}
