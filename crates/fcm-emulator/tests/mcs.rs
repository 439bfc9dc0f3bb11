#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The MCS server, driven by a raw `mcs-codec` client over TLS.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{McsClient, android_client, android_device, app_data, eventually};
use fcm_emulator::proto::DataMessageStanza;
use fcm_emulator::{
    DeviceCredentials, Emulator, Fault, LOGIN_ERROR_CODE, Notification, Overlap, SendMessage,
    Target,
};
use mcs_codec::McsMessage;

fn msg(n: u32) -> SendMessage {
    SendMessage::new().data("n", n.to_string())
}

/// Sends messages `0..count` to `token`; returns their persistent ids.
fn send_numbered(emu: &Emulator, token: &str, count: u32) -> Vec<String> {
    (0..count)
        .map(|n| emu.send(token, &msg(n)).unwrap().persistent_id)
        .collect()
}

#[tokio::test]
async fn login_succeeds_with_stream_ids() {
    let emu = Emulator::start().await.unwrap();
    let creds = emu.create_device();
    let (_client, response) = McsClient::login(&emu, creds, &[]).await;
    assert!(response.error.is_none());
    assert_eq!(response.stream_id, Some(1));
    assert_eq!(response.last_stream_id_received, Some(1));
    assert!(response.server_timestamp.is_some());
    eventually(&emu, |e| e.is_connected(creds.android_id)).await;
    assert_eq!(emu.login_count(creds.android_id), 1);
    let last = emu.last_login_request().unwrap();
    assert_eq!(last.user, creds.android_id.to_string());
    assert_eq!(
        emu.device(creds.android_id).unwrap().last_login_request,
        Some(last)
    );
}

#[tokio::test]
async fn login_fails_with_a_bad_token_or_unknown_device() {
    let emu = Emulator::start().await.unwrap();
    let creds = emu.create_device();
    let wrong = DeviceCredentials {
        security_token: creds.security_token ^ 1,
        ..creds
    };
    let (mut client, response) = McsClient::login(&emu, wrong, &[]).await;
    let error = response.error.expect("error");
    assert_ne!(error.code, 0);
    assert_eq!(error.code, LOGIN_ERROR_CODE);
    assert!(client.expect_end().await.is_empty());

    let unknown = DeviceCredentials {
        android_id: 42,
        security_token: 42,
    };
    let (_, response) = McsClient::login(&emu, unknown, &[]).await;
    assert!(response.error.is_some_and(|e| e.code != 0));
    assert_eq!(emu.failed_logins(), 2);
    assert_eq!(emu.login_count(creds.android_id), 0);
}

#[tokio::test]
async fn first_frame_must_be_a_login() {
    let emu = Emulator::start().await.unwrap();
    let mut client = McsClient::connect(&emu).await;
    client.ping().await;
    assert!(client.expect_end().await.is_empty());
}

#[tokio::test]
async fn delivers_queued_and_live_messages_with_stream_ids() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token) = android_device(&emu);
    let queued = emu
        .send(
            &token,
            &msg(1).notification(Notification::new("Hello", "World")),
        )
        .unwrap();
    assert!(!queued.encrypted);
    assert_eq!(
        emu.pending_ids(creds.android_id),
        std::slice::from_ref(&queued.persistent_id)
    );

    let mut client = McsClient::logged_in(&emu, creds).await;
    let first = client.expect_data().await;
    assert_eq!(
        first.persistent_id.as_deref(),
        Some(queued.persistent_id.as_str())
    );
    assert_eq!(first.stream_id, Some(2));
    assert_eq!(first.last_stream_id_received, Some(1));
    assert_eq!(first.category, "com.example.app");
    assert_eq!(app_data(&first, "n"), Some("1"));
    assert_eq!(app_data(&first, "gcm.notification.title"), Some("Hello"));
    assert_eq!(app_data(&first, "gcm.notification.body"), Some("World"));
    assert!(app_data(&first, "crypto-key").is_none());
    let id = first.persistent_id.clone().unwrap();
    assert!(id.starts_with("0:") && id.contains('%'));

    let live = emu.send(&token, &msg(2)).unwrap();
    let second = client.expect_data().await;
    assert_eq!(
        second.persistent_id.as_deref(),
        Some(live.persistent_id.as_str())
    );
    assert_eq!(second.stream_id, Some(3));
    eventually(&emu, |e| e.unacked_ids(creds.android_id).len() == 2).await;
    assert!(emu.pending_ids(creds.android_id).is_empty());
}

#[tokio::test]
async fn stream_ack_acknowledges_up_to_last_stream_id_and_is_confirmed() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    let a = emu.send(&token, &msg(1)).unwrap().persistent_id;
    let b = emu.send(&token, &msg(2)).unwrap().persistent_id;
    client.expect_data().await;
    client.expect_data().await;
    assert_eq!(client.stream_id_in, 3);

    // An ack covering only stream id 2 (the first message).
    client.stream_id_in = 2;
    client.stream_ack().await;
    eventually(&emu, |e| e.unacked_ids(creds.android_id) == [b.clone()]).await;
    assert!(emu.device(creds.android_id).unwrap().acked.contains(&a));

    // Now everything; the server confirms through the next frame it sends.
    client.stream_id_in = 3;
    client.stream_ack().await;
    eventually(&emu, |e| e.unacked_ids(creds.android_id).is_empty()).await;
    // Frames received by the server: login 1, two acks → 3; the ping is 4.
    client.ping().await;
    match client.recv().await {
        Some(Ok(McsMessage::HeartbeatAck(ack))) => {
            assert_eq!(ack.last_stream_id_received, Some(4));
            assert_eq!(ack.stream_id, Some(4));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn selective_ack_acknowledges_named_ids() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    let ids = send_numbered(&emu, &token, 3);
    client.expect_data_n(3).await;
    client
        .selective_ack(&[ids[0].clone(), ids[2].clone()])
        .await;
    eventually(&emu, |e| {
        e.unacked_ids(creds.android_id) == [ids[1].clone()]
    })
    .await;
}

#[tokio::test]
async fn redelivers_unacked_messages_after_reconnect() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    let ids = send_numbered(&emu, &token, 3);
    client.expect_data_n(3).await;
    // Acknowledge only the first, then drop the connection.
    client.selective_ack(&[ids[0].clone()]).await;
    eventually(&emu, |e| e.unacked_ids(creds.android_id).len() == 2).await;
    drop(client);

    let mut client = McsClient::logged_in(&emu, creds).await;
    let again: Vec<String> = [client.expect_data().await, client.expect_data().await]
        .into_iter()
        .map(|d| d.persistent_id.unwrap())
        .collect();
    assert_eq!(again, ids[1..]);
    assert_eq!(emu.login_count(creds.android_id), 2);
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn received_persistent_ids_are_not_redelivered() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    let ids = send_numbered(&emu, &token, 3);
    client.expect_data_n(3).await;
    drop(client);

    let (mut client, response) =
        McsClient::login(&emu, creds, &[ids[0].clone(), ids[2].clone()]).await;
    assert!(response.error.is_none());
    let only = client.expect_data().await;
    assert_eq!(only.persistent_id.as_deref(), Some(ids[1].as_str()));
    client.expect_silence(Duration::from_millis(200)).await;
    let acked = emu.device(creds.android_id).unwrap().acked;
    assert!(acked.contains(&ids[0]) && acked.contains(&ids[2]));
}

#[tokio::test]
async fn a_new_login_supersedes_the_old_connection() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _) = android_device(&emu);
    let mut old = McsClient::logged_in(&emu, creds).await;
    let _new = McsClient::logged_in(&emu, creds).await;
    assert!(old.expect_end().await.is_empty());
    assert!(emu.is_connected(creds.android_id));
}

#[tokio::test]
async fn a_takeover_overlaps_until_the_older_connection_is_closed() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token) = android_device(&emu);
    let id = creds.android_id;
    let mut old = McsClient::logged_in(&emu, creds).await;
    assert_eq!(emu.concurrent_logins(id), 1);
    let _new = McsClient::logged_in(&emu, creds).await;
    // The server closes the older connection; until then both count as logged in.
    assert!(old.expect_end().await.is_empty());
    eventually(&emu, |e| e.concurrent_logins(id) == 1).await;
    let overlap = emu.overlap(id);
    assert_eq!(overlap.max, 2);
    let [(start, end)] = overlap.intervals[..] else {
        panic!("{overlap:?}");
    };
    assert_eq!(overlap.total, end - start);
    let history = emu.login_history(id);
    assert_eq!(history.len(), 2);
    assert!(history[0].connection_id < history[1].connection_id);
    assert_eq!(history[1].logged_in_at, start);
    assert_eq!(history[0].ended_at, Some(end));
    assert_eq!(history[1].ended_at, None);
    assert_eq!(emu.overlap_report(), [(id, overlap)]);
    emu.send(&token, &msg(1)).unwrap();
    assert_eq!(emu.disconnect(Target::Device(id)), 1);
}

#[tokio::test]
async fn kept_connections_overlap_until_one_disconnects() {
    let emu = Emulator::builder()
        .close_superseded_connections(false)
        .start()
        .await
        .unwrap();
    let (creds, token) = android_device(&emu);
    let id = creds.android_id;
    let mut first = McsClient::logged_in(&emu, creds).await;
    let before = emu.elapsed();
    let mut second = McsClient::logged_in(&emu, creds).await;
    assert_eq!(emu.concurrent_logins(id), 2);
    let open = emu.overlap(id);
    assert_eq!(open.max, 2);
    let [(start, now)] = open.intervals[..] else {
        panic!("{open:?}");
    };
    assert!(before <= start && start <= now && now <= emu.elapsed());
    assert_eq!(emu.overlap_report().len(), 1);

    // Messages go to the newest connection only; the older one still answers heartbeats.
    let sent = emu.send(&token, &msg(1)).unwrap().persistent_id;
    let stanza = second.expect_data().await;
    assert_eq!(stanza.persistent_id.as_deref(), Some(sent.as_str()));
    first.ping().await;
    assert!(matches!(
        first.recv().await,
        Some(Ok(McsMessage::HeartbeatAck(_)))
    ));
    first.expect_silence(Duration::from_millis(100)).await;

    // The newest leaves: the interval ends, and the older one gets the unacknowledged
    // message.
    drop(second);
    eventually(&emu, |e| e.concurrent_logins(id) == 1).await;
    let closed = emu.overlap(id);
    let [(start2, end)] = closed.intervals[..] else {
        panic!("{closed:?}");
    };
    assert_eq!(start2, start);
    assert!(end >= now);
    assert_eq!(closed.total, end - start);
    assert_eq!(emu.overlap(id), closed, "a closed interval does not grow");
    let history = emu.login_history(id);
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].ended_at, None);
    assert_eq!(history[1].ended_at, Some(end));
    let again = first.expect_data().await;
    assert_eq!(again.persistent_id.as_deref(), Some(sent.as_str()));
    assert!(emu.is_connected(id));

    // A disconnect closes every connection of the device.
    let _third = McsClient::logged_in(&emu, creds).await;
    assert_eq!(emu.concurrent_logins(id), 2);
    assert_eq!(emu.disconnect(Target::Device(id)), 2);
    assert!(first.expect_end().await.is_empty());
    eventually(&emu, |e| e.concurrent_logins(id) == 0).await;
    let overlap = emu.overlap(id);
    assert_eq!((overlap.max, overlap.intervals.len()), (2, 2));
}

#[tokio::test]
async fn one_connection_at_a_time_has_no_overlap() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _) = android_device(&emu);
    let id = creds.android_id;
    assert_eq!(emu.overlap(id), Overlap::default());
    let client = McsClient::logged_in(&emu, creds).await;
    assert_eq!(emu.concurrent_logins(id), 1);
    drop(client);
    eventually(&emu, |e| e.concurrent_logins(id) == 0).await;
    let killed = emu.elapsed();
    let _client = McsClient::logged_in(&emu, creds).await;
    let overlap = emu.overlap(id);
    assert_eq!(overlap.max, 1);
    assert!(overlap.intervals.is_empty());
    assert_eq!(overlap.total, Duration::ZERO);
    assert!(emu.overlap_report().is_empty());
    let history = emu.login_history(id);
    assert_eq!(history.len(), 2);
    let first_end = history[0].ended_at.unwrap();
    assert!(history[0].logged_in_at <= first_end && first_end <= killed);
    assert!(history[1].logged_in_at >= killed);
    assert_eq!(history[1].ended_at, None);
    assert_eq!(emu.concurrent_logins(0), 0);
    assert!(emu.login_history(0).is_empty());
}

/// The most connections the test opens: each costs two file descriptors here.
fn connection_budget(wanted: usize) -> usize {
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    limit.map_or(wanted, |limit| wanted.min(limit.saturating_sub(256) / 2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_devices_and_concurrent_connections() {
    const DEVICES: usize = 20_000;
    let emu = std::sync::Arc::new(Emulator::start().await.unwrap());
    let started = std::time::Instant::now();
    let devices: Vec<(DeviceCredentials, String)> =
        (0..DEVICES).map(|_| android_device(&emu)).collect();
    let created = started.elapsed();
    assert_eq!(emu.devices().len(), DEVICES);

    let connections = connection_budget(2_000);
    let started = std::time::Instant::now();
    let mut clients = Vec::with_capacity(connections);
    for batch in devices[..connections].chunks(100) {
        let mut tasks = tokio::task::JoinSet::new();
        for (creds, _) in batch {
            let emu = std::sync::Arc::clone(&emu);
            let creds = *creds;
            tasks.spawn(async move { McsClient::logged_in(&emu, creds).await });
        }
        clients.extend(tasks.join_all().await);
    }
    let logged_in = started.elapsed();
    for (creds, token) in &devices[..connections] {
        assert!(emu.is_connected(creds.android_id));
        emu.send(token, &msg(1)).unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        tasks.spawn(async move {
            client.expect_data().await;
            client
        });
    }
    let clients = tasks.join_all().await;
    assert_eq!(clients.len(), connections);
    assert!(emu.overlap_report().is_empty());
    eprintln!("{DEVICES} devices in {created:?}, {connections} logins in {logged_in:?}");
}

#[tokio::test]
async fn answers_heartbeats_and_pings_on_demand() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _, mut client) = android_client(&emu).await;
    client.ping().await;
    assert!(matches!(
        client.recv().await,
        Some(Ok(McsMessage::HeartbeatAck(_)))
    ));
    assert_eq!(emu.ping(Target::Device(creds.android_id)), 1);
    match client.recv().await {
        Some(Ok(McsMessage::HeartbeatPing(ping))) => {
            assert_eq!(ping.last_stream_id_received, Some(2));
        }
        other => panic!("{other:?}"),
    }
    client
        .send(McsMessage::from(
            fcm_emulator::proto::HeartbeatAck::default(),
        ))
        .await;
    eventually(&emu, |e| {
        e.device(creds.android_id).unwrap().heartbeat_acks_received == 1
    })
    .await;
    assert_eq!(emu.device(creds.android_id).unwrap().pings_received, 1);
}

#[tokio::test]
async fn periodic_server_heartbeat() {
    let emu = Emulator::builder()
        .heartbeat_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let (creds, _) = android_device(&emu);
    let (mut client, response) = McsClient::login(&emu, creds, &[]).await;
    assert_eq!(
        response.heartbeat_config.and_then(|c| c.interval_ms),
        Some(100)
    );
    assert!(matches!(
        client.recv().await,
        Some(Ok(McsMessage::HeartbeatPing(_)))
    ));
}

#[tokio::test]
async fn ack_on_any_frame_option() {
    let emu = Emulator::builder()
        .ack_on_any_frame(true)
        .start()
        .await
        .unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    emu.send(&token, &msg(1)).unwrap();
    client.expect_data().await;
    client.ping().await;
    eventually(&emu, |e| e.unacked_ids(creds.android_id).is_empty()).await;
}

#[tokio::test]
async fn upstream_messages_are_recorded() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _, mut client) = android_client(&emu).await;
    let upstream = DataMessageStanza {
        from: "gcm@android.com".into(),
        category: "com.google.android.gsf.gtalkservice".into(),
        ..Default::default()
    };
    client.send(McsMessage::from(upstream)).await;
    eventually(&emu, |e| {
        e.device(creds.android_id).unwrap().upstream.len() == 1
    })
    .await;
}

#[tokio::test]
async fn shutdown_sends_close() {
    let emu = Emulator::start().await.unwrap();
    let (_, _, mut client) = android_client(&emu).await;
    emu.shutdown().await;
    client.expect_close().await;
    assert!(matches!(
        emu.send("x", &msg(0)),
        Err(fcm_emulator::Error::UnknownToken(_) | fcm_emulator::Error::ShutDown)
    ));
}

#[tokio::test]
async fn deleted_messages_notice() {
    let emu = Emulator::start().await.unwrap();
    let (_, token, mut client) = android_client(&emu).await;
    emu.send_deleted_messages(&token, 7).unwrap();
    let notice = client.expect_data().await;
    assert_eq!(app_data(&notice, "message_type"), Some("deleted_messages"));
    assert_eq!(app_data(&notice, "total_deleted"), Some("7"));
}

#[tokio::test]
async fn queue_overflow_drops_oldest() {
    let emu = Emulator::builder()
        .max_queued_messages(2)
        .start()
        .await
        .unwrap();
    let (creds, token) = android_device(&emu);
    let ids = send_numbered(&emu, &token, 3);
    let info = emu.device(creds.android_id).unwrap();
    assert_eq!(info.pending, ids[1..]);
    assert_eq!(info.dropped_messages, 1);
}

// ------------------------------------------------------------------ faults

#[tokio::test]
async fn fault_drop_after_frames() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    emu.inject_fault(Target::Device(creds.android_id), Fault::DropAfterFrames(2))
        .unwrap();
    for n in 0..3 {
        emu.send(&token, &msg(n)).unwrap();
    }
    let seen = client.expect_end().await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    // One-shot: the next connection works and gets the third message plus the unacked.
    let mut client = McsClient::logged_in(&emu, creds).await;
    client.expect_data_n(3).await;
}

#[tokio::test]
async fn fault_drop_mid_frame() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    emu.inject_fault(Target::Device(creds.android_id), Fault::DropMidFrame)
        .unwrap();
    emu.send(&token, &msg(1)).unwrap();
    // The decoder sees half a frame and then EOF: a truncation error.
    match client.recv().await {
        Some(Err(mcs_codec::McsError::Truncated { .. })) => {}
        other => panic!("expected a truncated frame, got {other:?}"),
    }
}

#[tokio::test]
async fn fault_drop_mid_frame_globally_cuts_the_login_response() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _) = android_device(&emu);
    emu.inject_fault(Target::All, Fault::DropMidFrame).unwrap();
    let mut client = McsClient::send_login(&emu, creds).await;
    assert!(matches!(client.recv().await, None | Some(Err(_))));
    emu.clear_faults(Target::All);
    let _ = McsClient::logged_in(&emu, creds).await;
}

#[tokio::test]
async fn fault_stall_stops_everything_until_cleared() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    emu.inject_fault(Target::Device(creds.android_id), Fault::Stall)
        .unwrap();
    emu.send(&token, &msg(1)).unwrap();
    client.ping().await;
    client.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(emu.pending_ids(creds.android_id).len(), 1);
    emu.clear_faults(Target::Device(creds.android_id));
    client.expect_data().await;
}

#[tokio::test]
async fn fault_global_stall_holds_back_the_login_response() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _) = android_device(&emu);
    emu.inject_fault(Target::All, Fault::Stall).unwrap();
    let mut client = McsClient::send_login(&emu, creds).await;
    client.expect_silence(Duration::from_millis(300)).await;
    emu.clear_faults(Target::All);
    assert!(matches!(
        client.recv().await,
        Some(Ok(McsMessage::LoginResponse(_)))
    ));
}

#[tokio::test]
async fn fault_send_close() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _, mut client) = android_client(&emu).await;
    emu.inject_fault(Target::Device(creds.android_id), Fault::SendClose)
        .unwrap();
    client.expect_close().await;
}

#[tokio::test]
async fn fault_armed_offline_fires_after_next_login() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _) = android_device(&emu);
    emu.inject_fault(Target::Device(creds.android_id), Fault::SendClose)
        .unwrap();
    let mut client = McsClient::logged_in(&emu, creds).await;
    client.expect_close().await;
    // Used up: the next login stays up.
    let mut client = McsClient::logged_in(&emu, creds).await;
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn fault_send_stream_error() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _, mut client) = android_client(&emu).await;
    emu.inject_fault(
        Target::Device(creds.android_id),
        Fault::SendStreamError {
            error_type: "conflict".into(),
            text: Some("replaced".into()),
        },
    )
    .unwrap();
    let seen = client.expect_end().await;
    match seen.as_slice() {
        [McsMessage::StreamErrorStanza(e)] => {
            assert_eq!(e.r#type, "conflict");
            assert_eq!(e.text.as_deref(), Some("replaced"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fault_send_garbage() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _, mut client) = android_client(&emu).await;
    // Tag 0 with a 6-byte varint: the codec must reject it.
    emu.inject_fault(
        Target::Device(creds.android_id),
        Fault::SendGarbage(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])),
    )
    .unwrap();
    assert!(matches!(
        client.recv().await,
        Some(Err(mcs_codec::McsError::SizeOverflow))
    ));
}

#[tokio::test]
async fn fault_send_unknown_tag_keeps_the_connection() {
    let emu = Emulator::start().await.unwrap();
    let (creds, token, mut client) = android_client(&emu).await;
    emu.inject_fault(
        Target::Device(creds.android_id),
        Fault::SendUnknownTag {
            tag: 15,
            body: Bytes::from_static(b"\x08\x01"),
        },
    )
    .unwrap();
    match client.recv().await {
        Some(Ok(McsMessage::Unknown { tag, bytes })) => {
            assert_eq!(tag, 15);
            assert_eq!(&bytes[..], b"\x08\x01");
        }
        other => panic!("{other:?}"),
    }
    emu.send(&token, &msg(1)).unwrap();
    let data = client.expect_data().await;
    assert_eq!(data.stream_id, Some(3));
}

#[tokio::test]
async fn global_faults_apply_to_every_connection_until_cleared() {
    let emu = Emulator::start().await.unwrap();
    let (a, _) = android_device(&emu);
    let (b, _) = android_device(&emu);
    emu.inject_fault(Target::All, Fault::SendClose).unwrap();
    for creds in [a, b, a] {
        let mut client = McsClient::logged_in(&emu, creds).await;
        client.expect_close().await;
    }
    emu.clear_faults(Target::All);
    let mut client = McsClient::logged_in(&emu, a).await;
    client.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn disconnect_on_demand() {
    let emu = Emulator::start().await.unwrap();
    let (creds, _, mut client) = android_client(&emu).await;
    assert_eq!(emu.disconnect(Target::All), 1);
    assert!(client.expect_end().await.is_empty());
    eventually(&emu, |e| !e.is_connected(creds.android_id)).await;
}

#[tokio::test]
async fn client_garbage_and_oversized_frames_only_close_that_connection() {
    use tokio::io::AsyncWriteExt;
    let emu = Emulator::builder()
        .max_frame_length(1024)
        .start()
        .await
        .unwrap();
    let (creds, token) = android_device(&emu);
    let inputs: [&[u8]; 4] = [
        // Wrong version byte.
        &[7, 2, 0],
        // Version, LoginRequest tag, a size far over the limit.
        &[41, 2, 0xff, 0xff, 0xff, 0x7f],
        // Version, LoginRequest tag, an undecodable body.
        &[41, 2, 3, 0xff, 0xff, 0xff],
        // Version, then a truncated frame and EOF.
        &[41, 2, 10, 1],
    ];
    for input in inputs {
        let mut client = McsClient::connect(&emu).await;
        let stream = client.framed.get_mut();
        stream.write_all(input).await.unwrap();
        stream.shutdown().await.unwrap();
        assert!(client.expect_end().await.is_empty());
    }
    // A logged-in client sending an oversized frame is dropped too.
    let mut client = McsClient::logged_in(&emu, creds).await;
    let stream = client.framed.get_mut();
    stream.write_all(&[8, 0x80, 0x10]).await.unwrap();
    stream.flush().await.unwrap();
    assert!(client.expect_end().await.is_empty());
    // The emulator still serves.
    let mut client = McsClient::logged_in(&emu, creds).await;
    emu.send(&token, &msg(1)).unwrap();
    client.expect_data().await;
}
