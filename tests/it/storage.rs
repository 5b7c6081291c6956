//! The database file: a corrupted one is refused at startup with a clear
//! message rather than trusted.

use std::process::Stdio;

use fulfilld::stripe::double::{SampleSession, StripeDouble};

use crate::helpers::{
    binary::{Binary, free_port},
    *,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_database_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = StripeDouble::start(SECRET_KEY).await.unwrap();
    let receiver = Receiver::start().await;
    let bin = Binary::start(dir.path(), &stripe, &receiver).await;
    for i in 0..200 {
        let id = format!("cs_test_corrupt_{i:04}");
        let mut sample = SampleSession::paid(&id, 1);
        sample.payment_status = "unpaid";
        let (session, _) = sample.build();
        assert_eq!(
            bin.send(
                &format!("evt_corrupt_{i}"),
                "checkout.session.completed",
                &session
            )
            .await,
            200
        );
    }
    bin.kill_9();

    // Flip bytes in the middle of the file, as a failing disk would.
    let path = dir.path().join("fulfilld.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for at in [len / 3, len / 2, 2 * len / 3] {
        for b in &mut bytes[at..at + 64] {
            *b ^= 0x5a;
        }
    }
    std::fs::write(&path, &bytes).unwrap();

    let output = Binary::command(dir.path(), stripe.url(), &receiver.url, free_port())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a corrupted database must not be served"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the database at"), "{stderr}");
    assert!(stderr.contains("fulfilld.redb"), "{stderr}");
}
