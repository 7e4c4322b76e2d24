//! One rule, one text: the transport's diagnosis and the session policy agree on what a
//! CONNACK code means and on when a clock counts as synced.

use acorn_mqtt::{connack_meaning, Event, Session, SessionConfig, Topics};
use acorn_transport::diagnosis::EARLIEST_PLAUSIBLE_UNIX_TIME;
use acorn_transport::Diagnosis;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn connack_codes_read_the_same_in_the_session_and_the_diagnosis() {
    let topics = Topics::new("acorn-0001").unwrap();
    for code in 1..=5u8 {
        let mut session =
            Session::new(SessionConfig::for_device(&topics), StdRng::seed_from_u64(1)).unwrap();
        session.handle(0, Event::Start);
        let _ = session.drain_actions().count();
        session.handle(10, Event::ConnectRefused { code });
        let status = session.status().to_string();
        let diagnosis = Diagnosis::BrokerRefused { code }.to_string();
        let meaning = connack_meaning(code);
        assert!(status.contains(meaning), "session: {status}");
        assert!(diagnosis.contains(meaning), "diagnosis: {diagnosis}");
    }
}

#[test]
fn the_clock_cutoff_is_the_certificate_validations() {
    assert_eq!(
        EARLIEST_PLAUSIBLE_UNIX_TIME,
        acorn_certs::CLOCK_SYNCED_AFTER
    );
    // 2024-06-01: synced for both (the transport used to say "before 2025: not synced").
    let mid_2024 = 1_717_200_000;
    assert!(mid_2024 >= EARLIEST_PLAUSIBLE_UNIX_TIME);
}
