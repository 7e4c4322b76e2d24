//! A hostile TLS 1.3 server against the chip's TLS client: embedded-tls's `TlsConnection` with
//! our crypto provider and verifier (`acorn_embedded::tls`), as `transport.rs` and `ping.rs`
//! set it up, over an in-memory duplex. Whoever answers the device's TCP connection (DNS
//! spoofing, a hostile Wi-Fi) reaches this before any authentication.
//!
//! Random bytes never get past the ServerHello: the flight after it is encrypted under keys
//! from the ECDHE with the client's key share. So the harness is a real server: it reads the
//! ClientHello the client wrote, does the TLS 1.3 key schedule (RFC 8446 §7.1: HKDF-SHA256,
//! P-256 ECDHE with a server ephemeral key, the transcript hash, AES-128-GCM records; the
//! pieces are `crates/acorn-tls-peer`, on the RustCrypto crates, not embedded-tls's code) and
//! sends what the input scripts: correct messages it builds, or the fuzzer's bytes, encrypted
//! or not. Its first seeds found that embedded-tls accepted a server that sent no Certificate
//! and no CertificateVerify (seed `finished-without-certificate`; fixed in the vendored copy,
//! `crates/acorn-embedded/tests/hostile_server.rs` is its regression test).
//!
//! Input (`acorn_fuzz::Fields`: a field is a 16-bit little-endian length and that many bytes):
//! - byte 0: the seed of both sides' deterministic RNGs (client hello random and key share,
//!   server random and key share);
//! - byte 1: how the server's bytes are cut into the client's reads (0: as large as asked,
//!   else reads of at most that many bytes);
//! - byte 2: flags: bit 0 the client offers ALPN `x-amzn-mqtt-ca` (port 443); bit 1 the
//!   stream ends with a reset (a read error) instead of EOF; bit 2 the client writes a line
//!   of application data after the handshake;
//! - then at most 64 ops, an op byte (taken mod 16) and its operands, until the input ends:
//!   - 0 ServerHello (correct: TLS 1.3, AES-128-GCM, the server's P-256 key share);
//!   - 1 [field] ServerHello whose extensions end with the field's bytes;
//!   - 2 [kind] a correct message the harness builds, added to the open encrypted handshake
//!     record (kinds below);
//!   - 3 [type] [field] a handshake message of that type with the field as its body;
//!   - 4 [field] raw bytes added to the open handshake record;
//!   - 5 [pad] closes the open handshake record with `pad` zero bytes of padding (records
//!     are otherwise closed before any other op that is not 2, 3, 4, and at the end);
//!   - 6 [field] a raw record: the field's bytes as they are;
//!   - 7 [type] [field] a plaintext record of that content type with the field as body;
//!   - 8 a plaintext change_cipher_spec record;
//!   - 9 [level] [description] an encrypted alert;
//!   - 10 [level] [description] a plaintext alert;
//!   - 11 [field] an application data record under the server's application traffic key
//!     (switching to it, once, from the transcript so far: after a correct Finished, the
//!     key the client derives);
//!   - 12 [type] [field] the field encrypted under the current key as content `type`;
//!   - 13 [n] an encrypted application data record of `n` x 128 bytes (up to 32 KiB: more
//!     than a TLS record may hold and than the client's read buffer);
//!   - 14 [kind] a built message in a plaintext handshake record;
//!   - 15 switch to the application traffic keys (without a record).
//!
//!   Built kinds (mod 16): 0 EncryptedExtensions (with ALPN when offered); Certificate with
//!   1 the good chain (leaf for `broker.fuzz.test` + intermediate), 2 a leaf for another host,
//!   3 an expired leaf, 4 a leaf under a rogue CA with the intermediate's name, 5 the leaf
//!   without the intermediate, 6 the device's certificate (from the root, no SAN), 7 the good
//!   chain among extra certificates; CertificateVerify 8 by the server key over the
//!   transcript, 9 by the rogue leaf's key, 10 by the server key with the client's context
//!   string; Finished 11 correct, 12 one bit off; 13 CertificateRequest; 14 NewSessionTicket;
//!   15 KeyUpdate.
//!
//! Properties (besides "never a panic", which on the chip is a reboot):
//! - the handshake ends: every read and write of the duplex is counted and capped, the stream
//!   ends in EOF (or a reset), and the client's ClientHello is well formed (TLS 1.3 only,
//!   AES-128-GCM only, a P-256 key share, SNI `broker.fuzz.test`, ALPN when configured);
//! - the client accepts the handshake only if the first correct server Finished it could have
//!   seen came after a Certificate carrying the fixture chain for the host and a
//!   CertificateVerify that the leaf's key made over this handshake's transcript (checked on
//!   the bytes sent, raw or built, so fuzzer bytes that happen to pass count the same);
//! - it accepts every clean flight (the ServerHello, then only EncryptedExtensions,
//!   CertificateRequest and change_cipher_spec around the good chain, its CertificateVerify
//!   right after it, and the correct Finished ending its record); its own flight then
//!   decrypts under the client handshake key with the device certificate and a valid
//!   CertificateVerify when asked, a correct Finished, and its application data under the
//!   client application key;
//! - a refusal is a `Diagnosis` (our `tls::handshake`), and when a clean flight's first
//!   fault is a built bad Certificate or CertificateVerify, it names it (host name mismatch,
//!   expired, unknown CA, invalid);
//! - after an accepted handshake, reading never panics, ends, and returns only a prefix of
//!   the bytes the harness encrypted as application data under the server application key.
//!
//! `TLS_SERVER_TRACE=1` prints how each run ended (accepted, or the diagnosis; the application
//! data read).
//!
//! Fixtures: `fuzz/fixtures/tls/` (made once by its `make.sh` with openssl; valid until 2056,
//! the client's clock is 2040-01-01). Seeds: `fuzz/corpus/tls_server/`, written by
//! `tls_server()` in `fuzz/make_seeds.py` (run it alone: `python3 -c 'import make_seeds as m;
//! m.tls_server()'` in `fuzz/`): a correct handshake with application data (with and without a
//! CertificateRequest, ALPN, chunked reads), a bad CertificateVerify, a wrong host, an expired
//! or rogue chain, a bad Finished, garbage after the ServerHello, an alert, a Finished
//! without a certificate, oversized records, a post-handshake KeyUpdate.
#![no_main]

use std::cell::RefCell;
use std::sync::OnceLock;

use acorn_embedded::tls::{
    self, CipherSuite, Provider, AWS_ALPN, TLS_READ_BUFFER, TLS_WRITE_BUFFER,
};
use acorn_embedded::{Diagnosis, TlsIdentity, TrustAnchors};
use acorn_fuzz::Fields;
use acorn_tls_peer::messages::{self, ClientHello, CLIENT_CV_CONTEXT, SERVER_CV_CONTEXT};
use acorn_tls_peer::schedule::finished_mac;
use acorn_tls_peer::wire::{handshake_message as handshake_msg, plain_record, Cursor};
use acorn_tls_peer::{HandshakeSecrets, RecordKeys as Keys};
use embedded_io::ErrorKind;
use embedded_tls::TlsConnection;
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const HOST: &str = "broker.fuzz.test";
/// 2040-01-01T00:00:00Z: inside every fixture's validity but `expired.der`'s.
const NOW: u64 = 2_208_988_800;

const CA: &[u8] = include_bytes!("../fixtures/tls/ca.der");
const INT: &[u8] = include_bytes!("../fixtures/tls/int.der");
const SERVER: &[u8] = include_bytes!("../fixtures/tls/server.der");
const SERVER_KEY: &[u8] = include_bytes!("../fixtures/tls/server.p8.der");
const WRONGHOST: &[u8] = include_bytes!("../fixtures/tls/wronghost.der");
const EXPIRED: &[u8] = include_bytes!("../fixtures/tls/expired.der");
const ROGUE_INT: &[u8] = include_bytes!("../fixtures/tls/rogue-int.der");
const ROGUE: &[u8] = include_bytes!("../fixtures/tls/rogue.der");
const ROGUE_KEY: &[u8] = include_bytes!("../fixtures/tls/rogue.p8.der");
const DEVICE: &[u8] = include_bytes!("../fixtures/tls/device.der");
const DEVICE_KEY: &[u8] = include_bytes!("../fixtures/tls/device.p8.der");

const MAX_OPS: usize = 64;
/// Reads at EOF and writes a connection may make (a client that keeps reading at EOF or keeps
/// writing hangs the chip; every other read returns bytes, of which there are finitely many).
const MAX_IDLE_READS: usize = 16;
const MAX_WRITES: usize = 256;
/// What the client writes after the handshake (flag bit 2).
const PING: &[u8] = b"acorn ping\n";

struct Fixtures {
    anchors: TrustAnchors,
    identity: TlsIdentity,
    server_key: SigningKey,
    rogue_key: SigningKey,
    device_public: VerifyingKey,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let device_key = SigningKey::from_pkcs8_der(DEVICE_KEY).expect("device key");
        Fixtures {
            anchors: TrustAnchors::from_der(CA).expect("fixture CA"),
            identity: TlsIdentity::from_der(DEVICE.to_vec(), DEVICE_KEY, "acorn-0001", HOST)
                .expect("fixture identity"),
            server_key: SigningKey::from_pkcs8_der(SERVER_KEY).expect("server key"),
            rogue_key: SigningKey::from_pkcs8_der(ROGUE_KEY).expect("rogue key"),
            device_public: *device_key.verifying_key(),
        }
    })
}

// ---- wire helpers (the TLS 1.3 pieces are acorn-tls-peer's) ------------------------

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the server needs from the ClientHello.
struct Hello {
    /// The whole handshake message (for the transcript).
    message: Vec<u8>,
    key_share: p256::PublicKey,
    alpn: bool,
}

/// Parses and checks the client's first record: one ClientHello as our client must send it.
fn parse_client_hello(wire: &[u8], alpn_offered: bool) -> Hello {
    let hello = ClientHello::parse(wire).expect("a well-formed ClientHello");
    assert_eq!(
        hello.cipher_suites,
        [0x13, 0x01],
        "only TLS_AES_128_GCM_SHA256"
    );
    assert_eq!(hello.versions.as_deref(), Some(&[3, 4][..]), "TLS 1.3 only");
    assert_eq!(
        hello.server_name.as_deref(),
        Some(HOST.as_bytes()),
        "SNI names the host"
    );
    let alpn = hello.alpn.as_deref() == Some(&[&[14u8][..], AWS_ALPN].concat()[..]);
    assert_eq!(alpn, alpn_offered, "ALPN as configured");
    Hello {
        key_share: hello.key_share.expect("a valid P-256 key share"),
        message: hello.message,
        alpn,
    }
}

// ---- the server -------------------------------------------------------------------------

/// A built message's place in a clean flight.
#[derive(Clone, Copy)]
enum Clean {
    /// EncryptedExtensions, CertificateRequest, change_cipher_spec: allowed anywhere.
    Neutral,
    GoodChain,
    GoodVerify,
    GoodFinished,
    /// A Certificate or CertificateVerify built bad, with the diagnosis it must cause.
    Fault(fn(&Diagnosis) -> bool),
    /// Anything else.
    Dirty,
}

/// What the server sent and knows, for the properties.
#[derive(Default)]
struct Verdict {
    /// All bytes for the client.
    wire: Vec<u8>,
    /// The latest Certificate sent holds the fixture chain for the host.
    chain_good: bool,
    /// The transcript hash right after that Certificate.
    chain_transcript: Vec<u8>,
    /// A CertificateVerify by the leaf's key over this handshake came after it.
    verify_good: bool,
    /// At the first correct Finished: whether the server had authenticated itself.
    authenticated_at_finished: Option<bool>,
    /// The flight up to the first correct Finished is clean (see the header).
    clean: bool,
    /// The clean flight's first fault and the diagnosis it must cause.
    fault: Option<fn(&Diagnosis) -> bool>,
    /// Steps of a clean flight so far: 0 nothing, 1 chain, 2 verify, 3 finished.
    clean_step: u8,
    /// The first correct Finished closed its record.
    finished_closed_record: bool,
    finished_pending: bool,
    /// The transcript right after the first correct Finished (the client's, when it accepts).
    finished_transcript: Option<Sha256>,
    certificate_requested: bool,
    /// The application data the server encrypted under its application key, in order.
    app_plain: Vec<u8>,
    /// The handshake secrets (made with the handshake keys), for checking the client's flight.
    secrets: Option<HandshakeSecrets>,
}

struct Server<'f> {
    fx: &'f Fixtures,
    rng: StdRng,
    ephemeral: p256::SecretKey,
    shared: Vec<u8>,
    alpn: bool,
    transcript: Sha256,
    seen_hello: bool,
    hs_keys: Option<Keys>,
    app_keys: Option<Keys>,
    /// The plaintext of the open encrypted handshake record.
    pending: Vec<u8>,
    pending_fault: bool,
    v: Verdict,
}

impl<'f> Server<'f> {
    fn new(fx: &'f Fixtures, seed: u8, hello: &Hello) -> Self {
        let mut rng = StdRng::seed_from_u64(0x5e4e_0000 + u64::from(seed));
        let ephemeral = p256::SecretKey::random(&mut rng);
        let shared =
            p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), hello.key_share.as_affine())
                .raw_secret_bytes()
                .to_vec();
        let mut transcript = Sha256::new();
        transcript.update(&hello.message);
        Server {
            fx,
            rng,
            ephemeral,
            shared,
            alpn: hello.alpn,
            transcript,
            seen_hello: false,
            hs_keys: None,
            app_keys: None,
            pending: Vec::new(),
            pending_fault: false,
            v: Verdict {
                clean: true,
                ..Verdict::default()
            },
        }
    }

    fn hash(&self) -> Vec<u8> {
        self.transcript.clone().finalize().to_vec()
    }

    /// The handshake keys, from the transcript at the first need (after the ServerHello in a
    /// real flight).
    fn hs_keys(&mut self) -> &mut Keys {
        if self.hs_keys.is_none() {
            let secrets = HandshakeSecrets::new(&self.shared, &self.hash());
            self.hs_keys = Some(Keys::new(&secrets.server));
            self.v.secrets = Some(secrets);
        }
        self.hs_keys.as_mut().expect("just set")
    }

    /// The handshake secrets, made with the handshake keys at the first need.
    fn secrets(&mut self) -> &HandshakeSecrets {
        self.hs_keys();
        self.v
            .secrets
            .as_ref()
            .expect("made with the handshake keys")
    }

    fn switch_to_app(&mut self) {
        if self.app_keys.is_none() {
            let hash = self.hash();
            let (server, _) = self.secrets().application(&hash);
            self.app_keys = Some(Keys::new(&server));
        }
    }

    /// Seals a record under the current keys; application data under the application key is
    /// what the client may return.
    fn seal(&mut self, inner: u8, content: &[u8], pad: usize) {
        let record = match self.app_keys.as_mut() {
            Some(keys) => {
                if inner == 23 {
                    self.v.app_plain.extend_from_slice(content);
                }
                keys.seal(inner, content, pad)
            }
            None => self.hs_keys().seal(inner, content, pad),
        };
        self.v.wire.extend_from_slice(&record);
    }

    fn flush(&mut self, pad: usize) {
        if self.pending.is_empty() {
            return;
        }
        let content = std::mem::take(&mut self.pending);
        let record_len = content.len() + 1 + pad + 16;
        if self.pending_fault && record_len > TLS_READ_BUFFER - 5 {
            // The client never decrypts this record, so never sees the fault in it.
            self.v.fault = None;
        }
        self.pending_fault = false;
        if self.v.finished_pending {
            self.v.finished_pending = false;
            self.v.finished_closed_record = true;
        }
        self.seal(22, &content, pad);
    }

    /// Any record-level op: closes the open handshake record first.
    fn record(&mut self, bytes: &[u8]) {
        self.flush(0);
        self.v.wire.extend_from_slice(bytes);
    }

    /// Anything but a clean flight's message, before the first correct Finished or in its
    /// record.
    fn dirty(&mut self) {
        if self.v.authenticated_at_finished.is_none() || self.v.finished_pending {
            self.v.clean = false;
        }
    }

    /// Notes a handshake message (built or raw) for the properties and the transcript.
    fn note(&mut self, msg: &[u8], clean: Clean) {
        let before = self.hash();
        // A message after the first correct Finished, in its record.
        if self.v.finished_pending {
            self.v.clean = false;
        }
        if self.v.authenticated_at_finished.is_none() {
            // A CertificateVerify must follow its Certificate directly (the client checks
            // it against the transcript its Certificate ended).
            if self.v.clean_step == 1 && !matches!(clean, Clean::GoodVerify) {
                self.v.clean = false;
            }
            match clean {
                Clean::Neutral => {}
                Clean::GoodChain if self.v.clean_step == 0 => self.v.clean_step = 1,
                Clean::GoodVerify if self.v.clean_step == 1 => self.v.clean_step = 2,
                Clean::GoodFinished if self.v.clean_step == 2 => self.v.clean_step = 3,
                Clean::Fault(check) if self.v.clean && self.v.fault.is_none() => {
                    self.v.fault = Some(check);
                    self.pending_fault = true;
                    self.v.clean = false;
                }
                _ => self.v.clean = false,
            }
        }
        self.transcript.update(msg);
        let body = msg.get(4..).unwrap_or(&[]);
        match msg.first() {
            Some(11) => {
                self.v.chain_good = contains(body, SERVER) && contains(body, INT);
                self.v.chain_transcript = self.hash();
                self.v.verify_good = false;
            }
            Some(15) if self.v.chain_good => {
                let mut c = Cursor(body);
                let scheme = c.u16();
                let sig = c.vec16().and_then(|s| Signature::from_der(s).ok());
                if let (Some(0x0403), Some(sig)) = (scheme, sig) {
                    let leaf = self.fx.server_key.verifying_key();
                    // Over this handshake: the transcript at the CertificateVerify or at its
                    // Certificate (both hold the ClientHello and ServerHello).
                    for th in [&before, &self.v.chain_transcript] {
                        let signed = [&[0x20; 64][..], SERVER_CV_CONTEXT, th].concat();
                        if leaf.verify(&signed, &sig).is_ok() {
                            self.v.verify_good = true;
                        }
                    }
                }
            }
            Some(20) if self.v.secrets.is_some() => {
                let correct = self
                    .v
                    .secrets
                    .as_ref()
                    .map(|secrets| finished_mac(&secrets.server, &before));
                if correct.as_deref() == Some(body) && self.v.authenticated_at_finished.is_none() {
                    self.v.authenticated_at_finished =
                        Some(self.v.chain_good && self.v.verify_good);
                    self.v.finished_transcript = Some(self.transcript.clone());
                    self.v.finished_pending = true;
                    if self.v.clean_step != 3 {
                        self.v.clean = false;
                    }
                }
            }
            Some(13) if self.v.authenticated_at_finished.is_none() => {
                self.v.certificate_requested = true;
            }
            _ => {}
        }
    }

    fn certificate(&self, chain: &[&[u8]]) -> Vec<u8> {
        messages::certificate(chain)
    }

    fn certificate_verify(&self, key: &SigningKey, context: &[u8]) -> Vec<u8> {
        messages::certificate_verify(key, context, &self.hash())
    }

    /// A correct message of `kind` (see the header) and its place in a clean flight.
    fn build(&mut self, kind: u8) -> (Vec<u8>, Clean) {
        let hostname = |d: &Diagnosis| matches!(d, Diagnosis::HostnameMismatch { .. });
        let expired = |d: &Diagnosis| matches!(d, Diagnosis::ServerCertificateExpired);
        let unknown = |d: &Diagnosis| matches!(d, Diagnosis::UnknownServerCa);
        let invalid = |d: &Diagnosis| matches!(d, Diagnosis::ServerCertificateInvalid(_));
        match kind % 16 {
            0 => (
                messages::encrypted_extensions(self.alpn.then_some(AWS_ALPN)),
                Clean::Neutral,
            ),
            1 => (self.certificate(&[SERVER, INT]), Clean::GoodChain),
            2 => (self.certificate(&[WRONGHOST, INT]), Clean::Fault(hostname)),
            3 => (self.certificate(&[EXPIRED, INT]), Clean::Fault(expired)),
            4 => (self.certificate(&[ROGUE, ROGUE_INT]), Clean::Fault(unknown)),
            5 => (self.certificate(&[SERVER]), Clean::Fault(unknown)),
            6 => (self.certificate(&[DEVICE]), Clean::Fault(hostname)),
            7 => (
                self.certificate(&[SERVER, ROGUE_INT, CA, INT, WRONGHOST]),
                Clean::GoodChain,
            ),
            8 => (
                self.certificate_verify(&self.fx.server_key, SERVER_CV_CONTEXT),
                Clean::GoodVerify,
            ),
            9 => (
                self.certificate_verify(&self.fx.rogue_key, SERVER_CV_CONTEXT),
                Clean::Fault(invalid),
            ),
            10 => (
                self.certificate_verify(&self.fx.server_key, CLIENT_CV_CONTEXT),
                Clean::Fault(invalid),
            ),
            11 | 12 => {
                let server = self.secrets().server.clone();
                let mut mac = finished_mac(&server, &self.hash());
                if kind % 16 == 12 {
                    mac[usize::from(kind / 16) % 32] ^= 1 << (kind % 8);
                    return (handshake_msg(20, &mac), Clean::Dirty);
                }
                (handshake_msg(20, &mac), Clean::GoodFinished)
            }
            13 => {
                // signature_algorithms: ecdsa_secp256r1_sha256.
                let exts = [0, 0x0d, 0, 4, 0, 2, 4, 3];
                let body = [&[0u8][..], &(exts.len() as u16).to_be_bytes(), &exts].concat();
                (handshake_msg(13, &body), Clean::Neutral)
            }
            14 => {
                let mut ticket = [0u8; 8];
                self.rng.fill_bytes(&mut ticket);
                let body = [
                    &[0, 0, 0x0e, 0x10, 1, 2, 3, 4, 1, 0, 0, 8][..],
                    &ticket,
                    &[0, 0],
                ]
                .concat();
                (handshake_msg(4, &body), Clean::Dirty)
            }
            _ => (handshake_msg(24, &[0]), Clean::Dirty),
        }
    }

    fn server_hello(&mut self, extra: &[u8]) -> Vec<u8> {
        let mut random = [0u8; 32];
        self.rng.fill_bytes(&mut random);
        messages::server_hello(&random, &self.ephemeral.public_key(), extra)
    }

    /// Runs the script; returns what the client gets and what the properties need.
    fn run(mut self, f: &mut Fields<'_>) -> Verdict {
        for _ in 0..MAX_OPS {
            if f.is_empty() {
                break;
            }
            let op = f.byte() % 16;
            if !matches!(op, 2..=4) {
                self.flush(0);
            }
            // Before the ServerHello the client takes nothing else.
            if op != 0 && !self.seen_hello {
                self.dirty();
            }
            match op {
                0 | 1 => {
                    let extra = if op == 1 { f.field() } else { &[] };
                    let sh = self.server_hello(extra);
                    if op == 1 || self.seen_hello || !self.v.wire.is_empty() {
                        self.dirty();
                    }
                    self.seen_hello = true;
                    self.transcript.update(&sh);
                    // The handshake keys come from the transcript up to the (first)
                    // ServerHello.
                    self.hs_keys();
                    self.record(&plain_record(22, &sh));
                }
                2 => {
                    let (msg, clean) = self.build(f.byte());
                    self.note(&msg, clean);
                    self.pending.extend_from_slice(&msg);
                }
                3 => {
                    let kind = f.byte();
                    let msg = handshake_msg(kind, f.field());
                    self.dirty();
                    self.note(&msg, Clean::Dirty);
                    self.pending.extend_from_slice(&msg);
                }
                4 => {
                    let bytes = f.field();
                    self.dirty();
                    self.transcript.update(bytes);
                    self.pending.extend_from_slice(bytes);
                }
                5 => {
                    let pad = usize::from(f.byte());
                    self.flush(pad);
                }
                6 => {
                    self.dirty();
                    let bytes = f.field();
                    self.record(bytes);
                }
                7 => {
                    self.dirty();
                    let kind = f.byte();
                    let body = f.field();
                    self.record(&plain_record(kind, body));
                }
                8 => self.record(&[20, 3, 3, 0, 1, 1]),
                9 => {
                    self.dirty();
                    let alert = [f.byte(), f.byte()];
                    self.seal(21, &alert, 0);
                }
                10 => {
                    self.dirty();
                    let alert = [f.byte(), f.byte()];
                    self.record(&plain_record(21, &alert));
                }
                11 => {
                    self.dirty();
                    self.switch_to_app();
                    let data = f.field();
                    self.seal(23, data, 0);
                }
                12 => {
                    self.dirty();
                    let kind = f.byte();
                    let data = f.field();
                    self.seal(kind, data, 0);
                }
                13 => {
                    self.dirty();
                    let n = usize::from(f.byte()) * 128;
                    let data = vec![b'x'; n];
                    self.seal(23, &data, 0);
                }
                14 => {
                    let (msg, clean) = self.build(f.byte());
                    self.dirty();
                    self.note(&msg, clean);
                    self.record(&plain_record(22, &msg));
                }
                _ => {
                    self.dirty();
                    self.switch_to_app();
                }
            }
        }
        self.flush(0);
        if !self.seen_hello {
            self.v.clean = false;
        }
        self.v
    }
}

// ---- the duplex -------------------------------------------------------------------------

struct PipeState<'a> {
    script: Fields<'a>,
    seed: u8,
    chunk: usize,
    reset_at_end: bool,
    alpn: bool,
    from_client: Vec<u8>,
    verdict: Option<Verdict>,
    read_at: usize,
    /// Reads that returned nothing (EOF or the reset) and writes: each capped.
    idle_reads: usize,
    writes: usize,
}

/// The client's socket: its writes are kept; at its first read the server answers the
/// ClientHello with the whole scripted flight, then hands it out in chunks.
struct Pipe<'a>(RefCell<PipeState<'a>>);

impl embedded_io::ErrorType for &Pipe<'_> {
    type Error = ErrorKind;
}

impl embedded_io_async::Read for &Pipe<'_> {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let mut s = self.0.borrow_mut();
        if s.verdict.is_none() {
            let hello = parse_client_hello(&s.from_client, s.alpn);
            let server = Server::new(fixtures(), s.seed, &hello);
            let verdict = server.run(&mut s.script);
            s.verdict = Some(verdict);
        }
        let s = &mut *s;
        let wire = &s.verdict.as_ref().expect("just set").wire;
        let at = s.read_at;
        let n = buf.len().min(s.chunk).min(wire.len() - at);
        if n == 0 {
            s.idle_reads += 1;
            assert!(
                s.idle_reads <= MAX_IDLE_READS,
                "the client keeps reading at EOF"
            );
            if s.reset_at_end {
                return Err(ErrorKind::ConnectionReset);
            }
        }
        buf[..n].copy_from_slice(&wire[at..at + n]);
        s.read_at += n;
        Ok(n)
    }
}

impl embedded_io_async::Write for &Pipe<'_> {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let mut s = self.0.borrow_mut();
        s.writes += 1;
        assert!(s.writes <= MAX_WRITES, "the client keeps writing");
        s.from_client.extend_from_slice(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

// ---- the client's flight ----------------------------------------------------------------

/// Checks what the client sent after its ClientHello, for a clean, accepted flight: the
/// device certificate and a valid CertificateVerify when asked, a correct Finished, all
/// under the client handshake key, then `PING` (if written) under the client application
/// key.
fn check_client_flight(fx: &Fixtures, from_client: &[u8], v: &Verdict, pinged: bool) {
    let mut wire = Cursor(from_client);
    let ch_len = {
        let mut c = Cursor(from_client);
        c.take(3);
        c.u16().expect("ClientHello record")
    };
    wire.take(5 + ch_len).expect("the ClientHello");
    let mut transcript = v.finished_transcript.clone().expect("accepted");
    let secrets = v
        .secrets
        .as_ref()
        .expect("accepted: the handshake secrets were made");
    let mut keys = Keys::new(&secrets.client);
    let mut app_keys: Option<Keys> = None;
    let mut finished = false;
    let mut certificate = false;
    let mut verified = false;
    let mut app = Vec::new();
    while !wire.0.is_empty() {
        let header = wire.take(5).expect("a whole record header");
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let body = wire.take(len).expect("a whole record");
        if header[0] == 20 {
            continue; // change_cipher_spec, for middleboxes
        }
        assert_eq!(
            header[0], 23,
            "the client's records after its hello are encrypted"
        );
        let record_keys = app_keys.as_mut().unwrap_or(&mut keys);
        let (inner, plain) = record_keys
            .open(header, body)
            .expect("the client's record decrypts under the key the server derived");
        if app_keys.is_some() {
            assert_eq!(inner, 23, "application data");
            app.extend_from_slice(&plain);
            continue;
        }
        assert_eq!(inner, 22, "the client's handshake flight");
        let mut msgs = Cursor(&plain);
        while !msgs.0.is_empty() {
            let start = msgs.0;
            let kind = msgs.u8().expect("type");
            let len = msgs.u24().expect("length");
            let body = msgs.take(len).expect("body");
            let msg = &start[..4 + body.len()];
            let before = transcript.clone().finalize().to_vec();
            transcript.update(msg);
            match kind {
                11 => {
                    assert!(
                        v.certificate_requested && !certificate,
                        "one Certificate, asked"
                    );
                    assert!(contains(body, DEVICE), "the device certificate");
                    certificate = true;
                }
                15 => {
                    let mut c = Cursor(body);
                    assert_eq!(c.u16(), Some(0x0403), "ecdsa_secp256r1_sha256");
                    let sig = Signature::from_der(c.vec16().expect("signature")).expect("DER");
                    let signed = [&[0x20; 64][..], CLIENT_CV_CONTEXT, &before].concat();
                    fx.device_public
                        .verify(&signed, &sig)
                        .expect("the client's CertificateVerify verifies");
                    verified = true;
                }
                20 => {
                    assert_eq!(
                        body,
                        finished_mac(&secrets.client, &before),
                        "the client's Finished"
                    );
                    finished = true;
                }
                other => panic!("the client sent handshake message {other}"),
            }
        }
        if finished {
            let th = v.finished_transcript.clone().expect("accepted").finalize();
            app_keys = Some(Keys::new(&secrets.application(&th).1));
        }
    }
    assert!(finished, "the client sent its Finished");
    assert_eq!(
        certificate && verified,
        v.certificate_requested,
        "client authentication exactly when asked"
    );
    assert_eq!(
        app,
        if pinged { PING } else { &[][..] },
        "the client's data"
    );
}

/// `TLS_SERVER_TRACE=1` prints how each run ended (to check what the seeds reach).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("TLS_SERVER_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let fx = fixtures();
    let mut f = Fields::new(data);
    let seed = f.byte();
    let chunk = match f.byte() {
        0 => usize::MAX,
        n => usize::from(n),
    };
    let flags = f.byte();
    let alpn_offered = flags & 1 != 0;
    let pipe = Pipe(RefCell::new(PipeState {
        script: f,
        seed,
        chunk,
        reset_at_end: flags & 2 != 0,
        alpn: alpn_offered,
        from_client: Vec::new(),
        verdict: None,
        read_at: 0,
        idle_reads: 0,
        writes: 0,
    }));

    let mut read_buf = vec![0u8; TLS_READ_BUFFER];
    let mut write_buf = vec![0u8; TLS_WRITE_BUFFER];
    let mut conn: TlsConnection<'_, &Pipe<'_>, CipherSuite> =
        TlsConnection::new(&pipe, &mut read_buf, &mut write_buf);
    let alpn: [&[u8]; 1] = [AWS_ALPN];
    let config = tls::tls_config(HOST, alpn_offered.then_some(&alpn[..]));
    let rng = StdRng::seed_from_u64(u64::from(seed));
    let mut provider = Provider::new(rng, &fx.identity, &fx.anchors, HOST, NOW);
    let result = embassy_futures::block_on(tls::handshake(&mut conn, &config, &mut provider));
    drop(provider);

    let state = pipe.0.borrow();
    let v = state
        .verdict
        .as_ref()
        .expect("the client read the server's answer");
    if trace() {
        eprintln!(
            "tls_server: {} ({} bytes from the server; clean {}, first correct Finished {:?})",
            match &result {
                Ok(()) => "accepted".to_string(),
                Err(d) => format!("refused: {d:?}"),
            },
            v.wire.len(),
            v.clean,
            v.authenticated_at_finished
        );
    }
    match &result {
        Ok(()) => assert_eq!(
            v.authenticated_at_finished,
            Some(true),
            "the client accepted a server that did not authenticate itself (first correct \
             Finished after a good chain and CertificateVerify: {:?})",
            v.authenticated_at_finished
        ),
        Err(diagnosis) => {
            assert!(
                !(v.clean && v.finished_closed_record && v.authenticated_at_finished == Some(true)),
                "a clean, correct flight was refused: {diagnosis:?}"
            );
            if let Some(check) = v.fault {
                assert!(check(diagnosis), "the wrong diagnosis: {diagnosis:?}");
            }
        }
    }
    drop(state);
    if result.is_err() {
        return;
    }

    // The application phase.
    let pinged = flags & 4 != 0;
    if pinged {
        embassy_futures::block_on(async {
            conn.write(PING).await.expect("buffers the write");
            conn.flush().await.expect("writes to the pipe");
        });
    }
    // Every read returns at least a byte of the server's data or ends.
    let limit = pipe
        .0
        .borrow()
        .verdict
        .as_ref()
        .expect("set")
        .app_plain
        .len()
        + 2;
    let mut got = Vec::new();
    let mut buf = [0u8; 700];
    let mut ended = false;
    for _ in 0..limit {
        match embassy_futures::block_on(conn.read(&mut buf)) {
            Ok(0) | Err(_) => {
                ended = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let state = pipe.0.borrow();
    let v = state.verdict.as_ref().expect("set");
    assert!(ended, "the client keeps returning data");
    if trace() {
        eprintln!(
            "tls_server: read {} of {} bytes of application data",
            got.len(),
            v.app_plain.len()
        );
    }
    assert!(
        v.app_plain.starts_with(&got),
        "the client returned {} bytes that are not the server's application data",
        got.len()
    );
    if v.clean {
        check_client_flight(fx, &state.from_client, v, pinged);
    }
});
