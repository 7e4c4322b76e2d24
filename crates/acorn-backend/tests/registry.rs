//! One registry test suite, run against both stores: SQLite (a file in a temporary directory)
//! and PostgreSQL (a real cluster made by the test with initdb, on a free loopback port).
//! Each case is a function over a `Registry`; `both!` runs it once per store.

use std::sync::Arc;

use acorn_backend::registry::history::{
    CertificatePurpose, CertificateState, ClaimedDevice, NewCertificate, RotationRefusal,
};
use acorn_backend::registry::{
    migrate, NewDevice, RegisterError, RegistrationStatus, TokenBinding, TokenClaim,
    RESERVATION_SECONDS,
};
use acorn_backend::{DatabaseUrl, PoolOptions, Registry};
use acorn_test_support::postgres::Postgres;
use secrecy::ExposeSecret as _;

/// Keeps the store alive while a case runs.
enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] Postgres),
}

async fn sqlite() -> (Registry, Guard) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = DatabaseUrl::Sqlite(dir.path().join("registry.sqlite3"));
    let registry = Registry::connect(&url, &PoolOptions::default())
        .await
        .expect("sqlite registry");
    (registry, Guard::Sqlite(dir))
}

async fn postgres() -> (Registry, Guard) {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("start postgres");
    let url = DatabaseUrl::parse(&pg.create_database("acorn")).expect("url");
    let registry = Registry::connect(&url, &PoolOptions::default())
        .await
        .expect("postgres registry");
    (registry, Guard::Postgres(pg))
}

macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let (registry, _guard) = super::sqlite().await;
                super::$case(registry).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let (registry, _guard) = super::postgres().await;
                super::$case(registry).await;
            }
        }
    };
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn device(id: &str, n: u32) -> NewDevice {
    NewDevice {
        device_id: id.into(),
        serial_number: format!("SN-{n}"),
        mac_address: format!("AA:BB:CC:DD:EE:{n:02X}"),
        firmware_version: "1.0.0".into(),
        certificate_pem: format!("pem-{n}"),
        certificate_id: format!("{n:064x}"),
        certificate_serial: format!("{n:02x}"),
        certificate_arn: None,
    }
}

fn claim(d: &NewDevice) -> TokenClaim<'_> {
    TokenClaim {
        device_id: &d.device_id,
        serial_number: &d.serial_number,
        mac_address: &d.mac_address,
    }
}

both!(registers_lists_and_finds_devices);
async fn registers_lists_and_finds_devices(registry: Registry) {
    let t = now();
    let tokens = registry.mint_tokens(2, 600, t).await.expect("mint");
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0].expires_at, t + 600);
    for (i, id) in ["dev-b", "dev-a"].into_iter().enumerate() {
        let mut d = device(id, i as u32 + 1);
        if i == 0 {
            d.certificate_arn = Some("arn:aws:iot:us-east-1:123456789012:cert/abc".into());
        }
        let token = tokens[i].token.expose_secret();
        let r = registry
            .reserve(token, &claim(&d), t)
            .await
            .expect("reserve");
        let record = registry.register(token, &r, &d, t).await.expect("register");
        assert_eq!(record.device_id, id);
        assert_eq!(record.status, RegistrationStatus::Active);
        assert_eq!(record.certificate_arn, d.certificate_arn);
        assert_eq!(
            (record.created_at, record.updated_at, record.revoked_at),
            (t, t, None)
        );
    }
    let listed = registry.list().await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|d| d.device_id.as_str()).collect();
    assert_eq!(ids, ["dev-a", "dev-b"], "sorted by id");
    let b = registry.get("dev-b").await.expect("get").expect("found");
    assert_eq!(b.serial_number, "SN-1");
    assert_eq!(b.mac_address, "AA:BB:CC:DD:EE:01");
    assert!(registry.get("nope").await.expect("get").is_none());
    registry
        .check(std::time::Duration::from_secs(5))
        .await
        .expect("check");
}

both!(token_refusals_say_why);
async fn token_refusals_say_why(registry: Registry) {
    let t = now();
    let d = device("dev-1", 1);
    let err = registry
        .reserve("never-minted", &claim(&d), t)
        .await
        .expect_err("unknown");
    assert!(matches!(err, RegisterError::TokenUnknown), "{err}");
    let expired = registry
        .mint_tokens(1, 60, t - 7200)
        .await
        .expect("mint")
        .remove(0);
    let err = registry
        .reserve(expired.token.expose_secret(), &claim(&d), t)
        .await
        .expect_err("expired");
    assert!(
        matches!(err, RegisterError::TokenExpired { expires_at } if expires_at == t - 7140),
        "{err}"
    );
    let used = registry
        .mint_tokens(1, 600, t)
        .await
        .expect("mint")
        .remove(0);
    let token = used.token.expose_secret();
    let r = registry
        .reserve(token, &claim(&d), t)
        .await
        .expect("reserve");
    registry.register(token, &r, &d, t).await.expect("register");
    let d2 = device("dev-2", 2);
    let err = registry
        .reserve(token, &claim(&d2), t)
        .await
        .expect_err("used");
    assert!(matches!(err, RegisterError::TokenUsed), "{err}");
    // A free token for an id already registered.
    let other = registry
        .mint_tokens(1, 600, t)
        .await
        .expect("mint")
        .remove(0);
    let err = registry
        .reserve(other.token.expose_secret(), &claim(&d), t)
        .await
        .expect_err("exists");
    assert!(matches!(err, RegisterError::DeviceExists), "{err}");
}

both!(bound_tokens_register_only_their_device);
async fn bound_tokens_register_only_their_device(registry: Registry) {
    let t = now();
    let d = device("bound-1", 1);
    for binding in [
        TokenBinding {
            device_id: Some("bound-1".into()),
            ..Default::default()
        },
        TokenBinding {
            serial_number: Some("SN-1".into()),
            ..Default::default()
        },
        TokenBinding {
            mac_address: Some("AA:BB:CC:DD:EE:01".into()),
            ..Default::default()
        },
    ] {
        let token = registry
            .mint_bound_tokens(1, 600, &binding, t)
            .await
            .expect("mint")
            .remove(0);
        let token = token.token.expose_secret();
        let stranger = device("stranger", 9);
        let err = registry
            .reserve(token, &claim(&stranger), t)
            .await
            .expect_err("bound");
        assert!(
            matches!(err, RegisterError::TokenBound),
            "{binding:?}: {err}"
        );
        let r = registry
            .reserve(token, &claim(&d), t)
            .await
            .expect("its device");
        registry.release(token, &r).await.expect("release");
    }
}

both!(a_reserved_token_is_busy_until_released_or_lapsed);
async fn a_reserved_token_is_busy_until_released_or_lapsed(registry: Registry) {
    let t = now();
    let token = registry
        .mint_tokens(1, 600, t)
        .await
        .expect("mint")
        .remove(0);
    let token = token.token.expose_secret();
    let d = device("d", 1);
    let held = registry
        .reserve(token, &claim(&d), t)
        .await
        .expect("reserve");
    let busy = registry
        .reserve(token, &claim(&d), t)
        .await
        .expect_err("busy");
    assert!(matches!(busy, RegisterError::TokenBusy), "{busy}");
    // A reservation lapses on its own (a crashed request cannot hold a token forever).
    let later = t + RESERVATION_SECONDS + 1;
    let retaken = registry
        .reserve(token, &claim(&d), later)
        .await
        .expect("lapsed");
    registry
        .release(token, &held)
        .await
        .expect("a stale release is a no-op");
    let busy = registry
        .reserve(token, &claim(&d), later)
        .await
        .expect_err("still held");
    assert!(matches!(busy, RegisterError::TokenBusy), "{busy}");
    // The lapsed reservation cannot use the token either.
    let err = registry
        .register(token, &held, &d, later)
        .await
        .expect_err("not ours");
    assert!(matches!(err, RegisterError::TokenBusy), "{err}");
    registry.release(token, &retaken).await.expect("release");
    registry
        .reserve(token, &claim(&d), later)
        .await
        .expect("free again");
}

both!(one_device_id_is_reserved_by_one_token_and_a_failed_insert_rolls_back);
async fn one_device_id_is_reserved_by_one_token_and_a_failed_insert_rolls_back(registry: Registry) {
    let t = now();
    let tokens = registry.mint_tokens(3, 600, t).await.expect("mint");
    let (t0, t1, t2) = (
        tokens[0].token.expose_secret(),
        tokens[1].token.expose_secret(),
        tokens[2].token.expose_secret(),
    );
    let d = device("d1", 1);
    // While one token holds `d1`, another cannot reserve it; once that reservation lapses
    // (its request died), another can.
    let first = registry.reserve(t0, &claim(&d), t).await.expect("reserve");
    let busy = registry
        .reserve(t1, &claim(&d), t)
        .await
        .expect_err("device busy");
    assert!(matches!(busy, RegisterError::DeviceBusy), "{busy}");
    let later = t + RESERVATION_SECONDS + 1;
    let other = registry
        .reserve(t2, &claim(&d), later)
        .await
        .expect("lapsed");
    registry.release(t2, &other).await.expect("release");
    registry.register(t0, &first, &d, t).await.expect("first");
    // The insert refuses a device id taken after the reservation: the token stays unused.
    let second = registry
        .reserve(t1, &claim(&device("d2", 2)), t)
        .await
        .expect("reserve d2");
    let taken = NewDevice {
        certificate_id: "id-2".into(),
        certificate_serial: "02".into(),
        ..d.clone()
    };
    let err = registry
        .register(t1, &second, &taken, t)
        .await
        .expect_err("duplicate id");
    assert!(matches!(err, RegisterError::DeviceExists), "{err}");
    // A certificate-id collision (a UNIQUE column, not the key) is a fault, still atomic.
    let collide = NewDevice {
        device_id: "d2".into(),
        ..d.clone()
    };
    let err = registry
        .register(t1, &second, &collide, t)
        .await
        .expect_err("unique");
    assert!(matches!(err, RegisterError::Backend(_)), "{err}");
    assert_eq!(registry.list().await.expect("list").len(), 1);
    // The token is still usable, by its reservation, for a proper device.
    registry
        .register(t1, &second, &device("d2", 3), t)
        .await
        .expect("token kept");
}

both!(revocation_is_idempotent_and_feeds_the_crl);
async fn revocation_is_idempotent_and_feeds_the_crl(registry: Registry) {
    let t = now();
    let tokens = registry.mint_tokens(2, 600, t).await.expect("mint");
    for (i, token) in tokens.iter().enumerate() {
        let d = device(&format!("r{i}"), i as u32 + 1);
        let tk = token.token.expose_secret();
        let r = registry.reserve(tk, &claim(&d), t).await.expect("reserve");
        registry.register(tk, &r, &d, t).await.expect("register");
    }
    assert!(registry
        .revoked_serials()
        .await
        .expect("serials")
        .is_empty());
    let first = registry
        .revoke("r1", t + 5)
        .await
        .expect("revoke")
        .expect("found");
    assert_eq!(first.status, RegistrationStatus::Revoked);
    assert_eq!(first.revoked_at, Some(t + 5));
    let again = registry
        .revoke("r1", t + 9)
        .await
        .expect("revoke")
        .expect("found");
    assert_eq!(
        again.revoked_at,
        Some(t + 5),
        "the first revocation time is kept"
    );
    assert!(registry
        .revoke("missing", t)
        .await
        .expect("revoke")
        .is_none());
    let serials = registry.revoked_serials().await.expect("serials");
    assert_eq!(serials.len(), 1);
    assert_eq!(serials[0].serial_hex, "02");
    assert_eq!(serials[0].revoked_at.unix_timestamp(), t + 5);
    let numbers = [
        registry.next_crl_number().await.expect("n"),
        registry.next_crl_number().await.expect("n"),
        registry.next_crl_number().await.expect("n"),
    ];
    assert_eq!(numbers, [1, 2, 3]);
}

both!(a_rotation_supersedes_the_old_certificate_and_revokes_every_unused_one);
/// A rotation's certificates through the registry: issued (pending) → registered with its
/// ownership token (once) → promoted when the device reports it; the old one and every
/// certificate issued but never used end in the CRL; a revoked device takes its unused ones
/// with it.
async fn a_rotation_supersedes_the_old_certificate_and_revokes_every_unused_one(
    registry: Registry,
) {
    let t = now();
    let tokens = registry.mint_tokens(2, 600, t).await.expect("mint");
    for (i, id) in ["rot-a", "rot-b"].into_iter().enumerate() {
        let d = device(id, i as u32 + 1);
        let tk = tokens[i].token.expose_secret();
        let r = registry.reserve(tk, &claim(&d), t).await.expect("reserve");
        registry.register(tk, &r, &d, t).await.expect("register");
    }
    let issued = |device: &str, n: u32| NewCertificate {
        device_id: device.into(),
        certificate_id: format!("{:064x}", 0x100 + n),
        certificate_serial: format!("{:x}", 0x100 + n),
        certificate_pem: format!("pem-{n}"),
        certificate_arn: None,
    };
    // Unknown and revoked devices get nothing.
    assert_eq!(
        registry
            .add_pending_certificate(&issued("nobody", 9), "tok", CertificatePurpose::Rotation, t)
            .await
            .expect("db"),
        Err(RotationRefusal::UnknownDevice)
    );
    // A first certificate issued and never registered, then a second: the first is abandoned.
    assert_eq!(
        registry
            .add_pending_certificate(
                &issued("rot-a", 1),
                "tok-1",
                CertificatePurpose::Rotation,
                t
            )
            .await
            .expect("db"),
        Ok(0)
    );
    // Not within a minute of the first.
    assert_eq!(
        registry
            .add_pending_certificate(
                &issued("rot-a", 2),
                "tok-2",
                CertificatePurpose::Rotation,
                t + 1
            )
            .await
            .expect("db"),
        Err(RotationRefusal::Throttled {
            retry_after_seconds: 59
        })
    );
    assert_eq!(
        registry
            .add_pending_certificate(
                &issued("rot-a", 2),
                "tok-2",
                CertificatePurpose::Rotation,
                t + 60
            )
            .await
            .expect("db"),
        Ok(1)
    );
    // Not yet registered: not promotable. The abandoned one's token is dead; a token works
    // for its own device only, and once.
    assert!(registry
        .promote_certificate("rot-a", &issued("rot-a", 2).certificate_id, t + 102)
        .await
        .expect("db")
        .is_none());
    assert!(registry
        .register_certificate("rot-a", "tok-1", t + 102)
        .await
        .expect("db")
        .is_none());
    assert!(registry
        .register_certificate("rot-b", "tok-2", t + 102)
        .await
        .expect("db")
        .is_none());
    let registered = registry
        .register_certificate("rot-a", "tok-2", t + 102)
        .await
        .expect("db")
        .expect("registered");
    assert_eq!(registered.state, CertificateState::Registered);
    assert!(registry
        .register_certificate("rot-a", "tok-2", t + 102)
        .await
        .expect("db")
        .is_none());
    // Another device cannot claim it.
    assert!(registry
        .promote_certificate("rot-b", &registered.certificate_id, t + 103)
        .await
        .expect("db")
        .is_none());
    let promoted = registry
        .promote_certificate("rot-a", &registered.certificate_id, t + 103)
        .await
        .expect("db")
        .expect("promoted");
    assert_eq!(promoted.device.certificate_id, registered.certificate_id);
    assert_eq!(promoted.device.certificate_pem, "pem-2");
    assert_eq!(promoted.superseded_serial, "01");
    assert_eq!(promoted.abandoned, 0);
    let history = registry
        .certificate_history("rot-a")
        .await
        .expect("history");
    let states: Vec<(&str, CertificateState, Option<i64>)> = history
        .iter()
        .map(|c| (c.certificate_serial.as_str(), c.state, c.revoked_at))
        .collect();
    assert_eq!(
        states,
        [
            ("01", CertificateState::Superseded, Some(t + 103)),
            ("101", CertificateState::Abandoned, Some(t + 60)),
        ]
    );
    // Promoting again is a no-op.
    assert!(registry
        .promote_certificate("rot-a", &registered.certificate_id, t + 104)
        .await
        .expect("db")
        .is_none());
    let mut crl: Vec<String> = registry
        .revoked_serials()
        .await
        .expect("serials")
        .into_iter()
        .map(|s| s.serial_hex)
        .collect();
    crl.sort();
    assert_eq!(crl, ["01", "101"]);
    // A stale issued certificate is abandoned by the sweep; a revoked device's by revocation.
    registry
        .add_pending_certificate(
            &issued("rot-b", 3),
            "tok-3",
            CertificatePurpose::Rotation,
            t,
        )
        .await
        .expect("db")
        .expect("issued");
    assert_eq!(
        registry
            .abandon_stale_certificates(t + 100, 600)
            .await
            .expect("db"),
        0
    );
    assert_eq!(
        registry
            .abandon_stale_certificates(t + 700, 600)
            .await
            .expect("db"),
        1
    );
    registry
        .add_pending_certificate(
            &issued("rot-b", 4),
            "tok-4",
            CertificatePurpose::Rotation,
            t + 800,
        )
        .await
        .expect("db")
        .expect("issued");
    registry.revoke("rot-b", t + 801).await.expect("revoke");
    assert_eq!(
        registry
            .add_pending_certificate(
                &issued("rot-b", 5),
                "tok-5",
                CertificatePurpose::Rotation,
                t + 802
            )
            .await
            .expect("db"),
        Err(RotationRefusal::DeviceRevoked)
    );
    let mut crl: Vec<String> = registry
        .revoked_serials()
        .await
        .expect("serials")
        .into_iter()
        .map(|s| s.serial_hex)
        .collect();
    crl.sort();
    assert_eq!(crl, ["01", "02", "101", "103", "104"]);
    // A registered certificate may be in use on a device whose status was missed: neither a
    // newer CSR nor the sweep revokes it (only a pending one).
    registry
        .add_pending_certificate(
            &issued("rot-a", 6),
            "tok-6",
            CertificatePurpose::Rotation,
            t + 900,
        )
        .await
        .expect("db")
        .expect("issued");
    registry
        .register_certificate("rot-a", "tok-6", t + 901)
        .await
        .expect("db")
        .expect("registered");
    assert_eq!(
        registry
            .add_pending_certificate(
                &issued("rot-a", 7),
                "tok-7",
                CertificatePurpose::Rotation,
                t + 1000
            )
            .await
            .expect("db"),
        Ok(0)
    );
    assert_eq!(
        registry
            .abandon_stale_certificates(t + 99_999, 600)
            .await
            .expect("db"),
        1,
        "the pending one only"
    );
    let crl: Vec<String> = registry
        .revoked_serials()
        .await
        .expect("serials")
        .into_iter()
        .map(|s| s.serial_hex)
        .collect();
    assert!(
        crl.contains(&"107".to_owned()) && !crl.contains(&"106".to_owned()),
        "{crl:?}"
    );
}

both!(a_device_asking_in_a_loop_gets_at_most_twenty_certificates_a_day);
/// Every unused certificate ends in the CRL: a device (or claim) asking in a loop is throttled
/// (one a minute, twenty a day) so the CRL cannot grow without bound.
async fn a_device_asking_in_a_loop_gets_at_most_twenty_certificates_a_day(registry: Registry) {
    let t = now();
    let cert = |n: i64| NewCertificate {
        device_id: "looper".into(),
        certificate_id: format!("{:064x}", 0x300 + n),
        certificate_serial: format!("{:x}", 0x300 + n),
        certificate_pem: format!("loop-pem-{n}"),
        certificate_arn: None,
    };
    for n in 0..20 {
        let at = t + n * 61;
        assert!(
            registry
                .add_pending_certificate(&cert(n), "tok", CertificatePurpose::Claim, at)
                .await
                .expect("db")
                .is_ok(),
            "certificate {n}"
        );
    }
    assert_eq!(
        registry
            .add_pending_certificate(&cert(20), "tok", CertificatePurpose::Claim, t + 20 * 61)
            .await
            .expect("db"),
        Err(RotationRefusal::Throttled {
            retry_after_seconds: 3600
        })
    );
    // A day later the budget is back.
    assert!(registry
        .add_pending_certificate(
            &cert(21),
            "tok",
            CertificatePurpose::Claim,
            t + 86_400 + 20 * 61
        )
        .await
        .expect("db")
        .is_ok());
}

both!(a_claim_makes_a_new_device_from_its_pending_certificate_once);
/// Fleet provisioning by claim in the registry: a certificate for an unregistered id only;
/// `RegisterThing` with its token makes the device (once) with that certificate current.
async fn a_claim_makes_a_new_device_from_its_pending_certificate_once(registry: Registry) {
    let t = now();
    let tokens = registry.mint_tokens(1, 600, t).await.expect("mint");
    let d = device("taken", 1);
    let tk = tokens[0].token.expose_secret();
    let r = registry.reserve(tk, &claim(&d), t).await.expect("reserve");
    registry.register(tk, &r, &d, t).await.expect("register");
    let cert = |device: &str, n: u32| NewCertificate {
        device_id: device.into(),
        certificate_id: format!("{:064x}", 0x200 + n),
        certificate_serial: format!("{:x}", 0x200 + n),
        certificate_pem: format!("claim-pem-{n}"),
        certificate_arn: None,
    };
    assert_eq!(
        registry
            .add_pending_certificate(&cert("taken", 1), "c1", CertificatePurpose::Claim, t)
            .await
            .expect("db"),
        Err(RotationRefusal::DeviceExists)
    );
    registry
        .add_pending_certificate(&cert("fresh", 2), "c2", CertificatePurpose::Claim, t)
        .await
        .expect("db")
        .expect("issued");
    let claimed = ClaimedDevice {
        device_id: "fresh".into(),
        serial_number: "SN-9".into(),
        mac_address: "AA:BB:CC:DD:EE:09".into(),
        firmware_version: "2.0.0".into(),
    };
    assert!(registry
        .register_claimed_device(&claimed, "wrong", t + 1)
        .await
        .expect("db")
        .is_none());
    // An expired token is refused.
    assert!(registry
        .register_claimed_device(&claimed, "c2", t + 3601)
        .await
        .expect("db")
        .is_none());
    let record = registry
        .register_claimed_device(&claimed, "c2", t + 1)
        .await
        .expect("db")
        .expect("registered");
    assert_eq!(record.certificate_pem, "claim-pem-2");
    assert_eq!(record.serial_number, "SN-9");
    assert_eq!(record.status, RegistrationStatus::Active);
    assert!(registry
        .register_claimed_device(&claimed, "c2", t + 2)
        .await
        .expect("db")
        .is_none());
    assert!(registry
        .certificate_history("fresh")
        .await
        .expect("history")
        .is_empty());
}

both!(twelve_racers_on_one_token_make_one_registration);
async fn twelve_racers_on_one_token_make_one_registration(registry: Registry) {
    const RACERS: usize = 12;
    let t = now();
    let token = registry
        .mint_tokens(1, 600, t)
        .await
        .expect("mint")
        .remove(0);
    let token = Arc::new(token.token);
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (registry, token, barrier) =
            (registry.clone(), Arc::clone(&token), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let d = device(&format!("racer-{i}"), i as u32);
            barrier.wait().await;
            let tk = token.expose_secret();
            let r = registry.reserve(tk, &claim(&d), t).await?;
            registry.register(tk, &r, &d, t).await
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => won += 1,
            Err(RegisterError::TokenBusy | RegisterError::TokenUsed) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(registry.list().await.expect("list").len(), 1);
}

both!(migrations_are_applied_once_and_recorded);
async fn migrations_are_applied_once_and_recorded(registry: Registry) {
    let latest = match registry.kind() {
        "sqlite" => migrate::latest(migrate::SQLITE),
        _ => migrate::latest(migrate::POSTGRES),
    };
    assert_eq!(latest, 4);
    assert_eq!(registry.schema_version().await.expect("version"), latest);
}

#[tokio::test]
async fn sqlite_an_old_registry_is_adopted_and_migrated_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registry.sqlite3");
    // The schema of releases before migrations (no reservation or binding columns).
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "CREATE TABLE devices (device_id TEXT PRIMARY KEY NOT NULL, serial_number TEXT NOT NULL,
             mac_address TEXT NOT NULL, firmware_version TEXT NOT NULL,
             certificate_pem TEXT NOT NULL, certificate_id TEXT NOT NULL UNIQUE,
             certificate_serial TEXT NOT NULL UNIQUE,
             status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
             created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, revoked_at INTEGER);
         CREATE TABLE tokens (token_hash TEXT PRIMARY KEY NOT NULL, created_at INTEGER NOT NULL,
             expires_at INTEGER NOT NULL, used_at INTEGER, used_by TEXT);
         CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
         INSERT INTO meta VALUES ('crl_number', 7);
         INSERT INTO devices VALUES ('old-1', 'SN-1', 'AA:BB:CC:DD:EE:01', '0.9', 'pem', 'id1',
             '01', 'revoked', 1, 2, 2);",
    )
    .expect("old schema");
    drop(conn);
    let registry = Registry::open(&path).expect("adopted");
    assert_eq!(
        registry.schema_version().await.expect("version"),
        migrate::latest(migrate::SQLITE)
    );
    let old = registry.get("old-1").await.expect("get").expect("kept");
    assert_eq!(
        (old.status, old.certificate_arn),
        (RegistrationStatus::Revoked, None)
    );
    assert_eq!(
        registry.next_crl_number().await.expect("n"),
        8,
        "CRL numbers keep growing"
    );
    // The reservation columns exist now: a registration works.
    let t = now();
    let token = registry
        .mint_tokens(1, 600, t)
        .await
        .expect("mint")
        .remove(0);
    let d = device("new-1", 2);
    let r = registry
        .reserve(token.token.expose_secret(), &claim(&d), t)
        .await
        .expect("reserve");
    registry
        .register(token.token.expose_secret(), &r, &d, t)
        .await
        .expect("register");
    // Opening again applies nothing more.
    let again = Registry::open(&path).expect("reopen");
    let latest = migrate::latest(migrate::SQLITE);
    assert_eq!(again.schema_version().await.expect("version"), latest);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM acorn_schema_migrations", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(rows, latest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_instances_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres");
    let url = DatabaseUrl::parse(&pg.create_database("acorn")).expect("url");
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Registry::connect(&url, &PoolOptions::default()).await })
        })
        .collect();
    for open in opens {
        open.await
            .expect("task")
            .expect("each instance opens the registry");
    }
    let latest = migrate::latest(migrate::POSTGRES);
    assert_eq!(
        pg.psql("acorn", "SELECT COUNT(*) FROM acorn_schema_migrations"),
        latest.to_string()
    );
    pg.psql(
        "acorn",
        &format!(
            "INSERT INTO acorn_schema_migrations VALUES ({}, 'from the future', 0)",
            latest + 1
        ),
    );
    let err = Registry::connect(&url, &PoolOptions::default())
        .await
        .expect_err("too new");
    let text = err.to_string();
    assert!(
        text.contains(&format!("version {}", latest + 1))
            && text.contains(&format!("up to {latest}")),
        "{text}"
    );
}

#[tokio::test]
async fn postgres_errors_name_the_database_without_its_password() {
    // Nothing listens on this port: the error says where, and how to fix it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let url = DatabaseUrl::parse(&format!(
        "postgres://acorn:s3cret-pw@127.0.0.1:{port}/acorn"
    ))
    .expect("url");
    assert!(!format!("{url:?}").contains("s3cret-pw"));
    let options = PoolOptions {
        timeout: std::time::Duration::from_secs(2),
        ..PoolOptions::default()
    };
    let err = Registry::connect(&url, &options)
        .await
        .expect_err("no server");
    let text = err.to_string();
    assert!(
        text.contains(&format!("postgres://acorn@127.0.0.1:{port}/acorn")),
        "{text}"
    );
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(text.contains("ACORN_DATABASE_URL"), "{text}");
    for bad in ["mysql://x", "sqlite:", "postgres://"] {
        let parsed = DatabaseUrl::parse(bad);
        if bad == "postgres://" {
            // tokio-postgres accepts an empty URL (localhost, default user): fine.
            continue;
        }
        let e = parsed.expect_err(bad).to_string();
        assert!(
            e.contains("sqlite:") || e.contains("postgres://"),
            "{bad}: {e}"
        );
    }
}

both!(unused_tokens_are_listed_until_used_or_expired);
async fn unused_tokens_are_listed_until_used_or_expired(registry: Registry) {
    let t = now();
    let bound = TokenBinding {
        device_id: Some("dev-bound".into()),
        ..TokenBinding::default()
    };
    let soon = registry.mint_tokens(1, 60, t).await.expect("mint");
    let later = registry
        .mint_bound_tokens(1, 600, &bound, t)
        .await
        .expect("mint bound");
    registry
        .mint_tokens(1, 1, t - 10)
        .await
        .expect("mint expired");
    let listed = registry.unused_tokens(t).await.expect("list");
    let hash = |m: &acorn_backend::registry::MintedToken| {
        acorn_backend::registry::token_hash(m.token.expose_secret())
    };
    // Soonest expiry first, by hash only, the binding shown; the expired one is gone.
    assert_eq!(
        listed
            .iter()
            .map(|u| (u.hash.clone(), u.expires_at, u.bound_device_id.clone()))
            .collect::<Vec<_>>(),
        vec![
            (hash(&soon[0]), t + 60, None),
            (hash(&later[0]), t + 600, Some("dev-bound".into())),
        ]
    );
    // A used token leaves the list.
    let d = device("dev-bound", 1);
    let token = later[0].token.expose_secret();
    let reservation = registry
        .reserve(token, &claim(&d), t)
        .await
        .expect("reserve");
    registry
        .register(token, &reservation, &d, t)
        .await
        .expect("register");
    let listed = registry.unused_tokens(t).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hash, hash(&soon[0]));
}

both!(active_devices_are_walked_in_pages_and_an_unused_certificate_is_abandoned_by_id);
async fn active_devices_are_walked_in_pages_and_an_unused_certificate_is_abandoned_by_id(
    registry: Registry,
) {
    let t = now();
    let ids = ["pg-1", "pg-2", "pg-3", "pg-4", "pg-5"];
    let tokens = registry.mint_tokens(5, 600, t).await.expect("mint");
    for (i, id) in ids.into_iter().enumerate() {
        let d = device(id, 40 + i as u32);
        let tk = tokens[i].token.expose_secret();
        let r = registry.reserve(tk, &claim(&d), t).await.expect("reserve");
        registry.register(tk, &r, &d, t).await.expect("register");
    }
    registry.revoke("pg-3", t).await.expect("revoke");
    // Pages of two, each after the last id of the one before; the revoked device is left out.
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let page = registry
            .active_devices_after(&after, 2)
            .await
            .expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = last.device_id.clone();
        seen.extend(page.into_iter().map(|d| d.device_id));
    }
    assert_eq!(seen, ["pg-1", "pg-2", "pg-4", "pg-5"]);
    assert!(registry
        .active_devices_after("pg-5", 2)
        .await
        .expect("page")
        .is_empty());

    // A registered certificate abandoned by id: once; not another device's; never the
    // superseded one.
    let cert = |n: u32| NewCertificate {
        device_id: "pg-1".into(),
        certificate_id: format!("{:064x}", 0x900 + n),
        certificate_serial: format!("{:x}", 0x900 + n),
        certificate_pem: format!("pem-{n}"),
        certificate_arn: Some(format!("arn:aws:iot:us-east-1:1:cert/{:064x}", 0x900 + n)),
    };
    for n in [1, 2] {
        registry
            .add_registered_certificate(&cert(n), t)
            .await
            .expect("add");
    }
    let one = cert(1).certificate_id;
    assert!(!registry
        .abandon_certificate("pg-2", &one, t + 5)
        .await
        .expect("db"));
    assert!(registry
        .abandon_certificate("pg-1", &one, t + 5)
        .await
        .expect("db"));
    assert!(!registry
        .abandon_certificate("pg-1", &one, t + 6)
        .await
        .expect("db"));
    let history = registry.certificate_history("pg-1").await.expect("history");
    let record = history
        .iter()
        .find(|c| c.certificate_id == one)
        .expect("kept");
    assert_eq!(
        (record.state, record.revoked_at, record.updated_at),
        (CertificateState::Abandoned, Some(t + 5), t + 5)
    );
    // The other one becomes current; the old current is superseded and stays so.
    let two = cert(2).certificate_id;
    let promoted = registry
        .promote_certificate("pg-1", &two, t + 7)
        .await
        .expect("db")
        .expect("promoted");
    assert!(!registry
        .abandon_certificate("pg-1", &promoted.superseded_id, t + 8)
        .await
        .expect("db"));
    let history = registry.certificate_history("pg-1").await.expect("history");
    assert_eq!(
        history
            .iter()
            .find(|c| c.certificate_id == promoted.superseded_id)
            .map(|c| c.state),
        Some(CertificateState::Superseded)
    );
}
