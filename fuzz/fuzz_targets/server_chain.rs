//! The chip's verifier of the broker's certificate chain (`acorn_embedded::verify`, through
//! `ServerVerifier::check_chain`, what it does with the server's TLS Certificate message) on
//! chains a hostile server chooses: fixed certificates (`fuzz/fixtures/chain/`, see its
//! `make.py`: a root, an intermediate, leaves, an expired copy of the intermediate, a non-CA
//! that signs, an impostor root with the root's name, RSA and P-384 intermediates, a second
//! root), the same with bytes changed or cut short, and raw bytes.
//!
//! Input: a host byte (0 `broker.fuzz.test`, 1 `a.iot.fuzz.test`, 2 `a.b.iot.fuzz.test`,
//! 3 `127.0.0.1`, 4 `other.fuzz.test`, 5 a field as text, else `iot.fuzz.test`), a clock byte
//! (0 2030-01-01, 1 2019, 2 2046, 3 the next 8 bytes little-endian, else 2000-06-01), a byte
//! whose bits choose the trusted roots (bit 0 `root`, bit 1 `root2`, bit 2 `impostor`; none
//! set: `root`), then chain entries to the end: a tag byte and, by tag % 4, 0: a fixture
//! (index byte), 1: a fixture with edits (index byte, count byte, then per edit a 16-bit
//! little-endian offset and a byte), 2: a fixture cut short (index byte, 16-bit length),
//! 3: a field of raw bytes. Seeds: `make_seeds.py`'s `server_chain`.
//!
//! Properties:
//! - never a panic; the verdict is the same when checked twice;
//! - accepted only when another library finds the path: x509-parser (with ring) verifies
//!   every signature from the leaf up through certificates the server sent (of the first
//!   `MAX_CHAIN_CERTS`) to a trusted root, every issuer on the path says it is a CA, every
//!   certificate on it is within its dates, and the leaf's subjectAltName names the host by
//!   the written rules (a DNS name, a `*.` wildcard for exactly one leftmost label, or the IPv4
//!   address);
//! - refused as "unknown CA" only when x509-parser finds no such path whatever the dates and
//!   host; refused for the host name only when the leaf does not name it; "expired" or "not
//!   yet valid" only when a certificate the server sent is outside its dates at that time and
//!   no path within its dates exists (e.g. an expired copy of the intermediate sent beside its
//!   renewal must not fail the chain).
//!
//! (A first version of the verifier followed the first issuer that fit and never went back:
//! the fuzzer made a copy of the intermediate with a broken signature and put it first,
//! seed `damaged-copy-first`; the verifier now tries every path.)
#![no_main]

use acorn_embedded::verify::{ServerCertFailure, ServerVerifier, MAX_CHAIN_CERTS};
use acorn_embedded::TrustAnchors;
use acorn_fuzz::Fields;
use libfuzzer_sys::fuzz_target;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// The fixed certificates, by index (an index byte picks `index % FIXTURES.len()`).
const FIXTURES: [&[u8]; 18] = [
    include_bytes!("../fixtures/chain/leaf.der"),
    include_bytes!("../fixtures/chain/inter.der"),
    include_bytes!("../fixtures/chain/root.der"),
    include_bytes!("../fixtures/chain/direct.der"),
    include_bytes!("../fixtures/chain/inter_expired.der"),
    include_bytes!("../fixtures/chain/notca.der"),
    include_bytes!("../fixtures/chain/under_notca.der"),
    include_bytes!("../fixtures/chain/impostor.der"),
    include_bytes!("../fixtures/chain/under_impostor.der"),
    include_bytes!("../fixtures/chain/rsa_inter.der"),
    include_bytes!("../fixtures/chain/rsa_leaf.der"),
    include_bytes!("../fixtures/chain/p384_inter.der"),
    include_bytes!("../fixtures/chain/p384_leaf.der"),
    include_bytes!("../fixtures/chain/other_host.der"),
    include_bytes!("../fixtures/chain/no_san.der"),
    include_bytes!("../fixtures/chain/root2.der"),
    include_bytes!("../fixtures/chain/under_root2.der"),
    include_bytes!("../fixtures/chain/leaf.der"),
];
/// The roots an input may trust, by its bits.
const ROOTS: [&[u8]; 3] = [
    include_bytes!("../fixtures/chain/root.der"),
    include_bytes!("../fixtures/chain/root2.der"),
    include_bytes!("../fixtures/chain/impostor.der"),
];
/// 2030-01-01, inside every fixture's dates but the expired intermediate's.
const INSIDE: u64 = 1_893_456_000;

struct Input {
    host: String,
    now: u64,
    roots: Vec<&'static [u8]>,
    chain: Vec<Vec<u8>>,
}

fn fixture(index: u8) -> &'static [u8] {
    FIXTURES[usize::from(index) % FIXTURES.len()]
}

fn parse(data: &[u8]) -> Input {
    let mut f = Fields::new(data);
    let host = match f.byte() {
        0 => "broker.fuzz.test".to_owned(),
        1 => "a.iot.fuzz.test".to_owned(),
        2 => "a.b.iot.fuzz.test".to_owned(),
        3 => "127.0.0.1".to_owned(),
        4 => "other.fuzz.test".to_owned(),
        5 => f.text(),
        _ => "iot.fuzz.test".to_owned(),
    };
    let now = match f.byte() {
        0 => INSIDE,
        1 => 1_560_000_000,
        2 => 2_400_000_000,
        3 => f.u64(),
        _ => 960_000_000,
    };
    let mask = f.byte();
    let mut roots: Vec<&'static [u8]> = ROOTS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, r)| *r)
        .collect();
    if roots.is_empty() {
        roots.push(ROOTS[0]);
    }
    let mut chain = Vec::new();
    // Bounded by the input's length: every entry takes at least one byte.
    while !f.is_empty() {
        let entry = match f.byte() % 4 {
            0 => fixture(f.byte()).to_vec(),
            1 => {
                let mut der = fixture(f.byte()).to_vec();
                for _ in 0..f.byte() {
                    let at = usize::from(u16::from_le_bytes([f.byte(), f.byte()]));
                    let value = f.byte();
                    let len = der.len();
                    der[at % len] = value;
                }
                der
            }
            2 => {
                let der = fixture(f.byte());
                let len = usize::from(u16::from_le_bytes([f.byte(), f.byte()]));
                der[..len.min(der.len())].to_vec()
            }
            _ => f.field().to_vec(),
        };
        chain.push(entry);
    }
    Input {
        host,
        now,
        roots,
        chain,
    }
}

fn anchors(roots: &[&[u8]]) -> TrustAnchors {
    let pem: String = roots
        .iter()
        .map(|der| pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, der))
        .collect::<Result<_, _>>()
        .expect("encode the fixture roots");
    TrustAnchors::from_pem(pem.as_bytes()).expect("the fixture roots are certificates")
}

/// The certificate as x509-parser reads it, if it is DER that x509-cert's strict decoder takes
/// too (x509-parser alone is lenient: it reads an outer signature algorithm whose OID has
/// another tag, found by this target; the verifier decodes with x509-cert).
fn x509(der: &[u8]) -> Option<X509Certificate<'_>> {
    use x509_cert::der::Decode as _;
    x509_cert::Certificate::from_der(der).ok()?;
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c)
}

/// Whether x509-parser verifies `child`'s signature with `issuer`'s key, issued under its name.
/// A signature BIT STRING with unused bits is no DER signature (x509-parser reads its bytes
/// anyway; the verifier refuses it).
fn issued_by(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == issuer.subject().as_raw()
        && child.signature_value.unused_bits == 0
        && child.verify_signature(Some(issuer.public_key())).is_ok()
}

fn within(cert: &X509Certificate<'_>, now: u64) -> bool {
    let v = cert.validity();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    v.not_before.timestamp() <= now && now <= v.not_after.timestamp()
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    cert.basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca)
}

/// Whether there is a path from `sent[at]` to a root, through unused sent CA certificates;
/// with `now`, every certificate on it (not the root) is also within its dates.
fn path(
    sent: &[Option<X509Certificate<'_>>],
    roots: &[X509Certificate<'_>],
    at: usize,
    used: &mut Vec<bool>,
    now: Option<u64>,
) -> bool {
    let Some(cert) = &sent[at] else { return false };
    if now.is_some_and(|now| !within(cert, now)) {
        return false;
    }
    if roots.iter().any(|r| issued_by(cert, r)) {
        return true;
    }
    for next in 0..sent.len() {
        let Some(issuer) = &sent[next] else { continue };
        if used[next] || !is_ca(issuer) || !issued_by(cert, issuer) {
            continue;
        }
        used[next] = true;
        let found = path(sent, roots, next, used, now);
        used[next] = false;
        if found {
            return true;
        }
    }
    false
}

/// The host name rules, written out: a DNS name equal (any case, a final dot ignored), a `*.`
/// wildcard standing for exactly one non-empty leftmost label, or the IPv4 address.
fn names_host(leaf: &X509Certificate<'_>, host: &str) -> bool {
    let Ok(Some(san)) = leaf.subject_alternative_name() else {
        return false;
    };
    let ip: Option<Vec<u8>> = host
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|a| a.octets().to_vec());
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    san.value.general_names.iter().any(|name| match name {
        GeneralName::IPAddress(bytes) => ip.as_deref() == Some(*bytes),
        GeneralName::DNSName(dns) if ip.is_none() => {
            let dns = dns.strip_suffix('.').unwrap_or(dns).to_ascii_lowercase();
            match dns.strip_prefix("*.") {
                Some(rest) => host
                    .split_once('.')
                    .is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
                None => dns == host,
            }
        }
        _ => false,
    })
}

fuzz_target!(|data: &[u8]| {
    let input = parse(data);
    let anchors = anchors(&input.roots);
    let entries: Vec<&[u8]> = input.chain.iter().map(Vec::as_slice).collect();
    let verdict = ServerVerifier::new(&anchors, input.now, &input.host).check_chain(&entries);
    let again = ServerVerifier::new(&anchors, input.now, &input.host).check_chain(&entries);
    assert_eq!(verdict, again, "the same chain judged twice");

    let sent: Vec<Option<X509Certificate<'_>>> = entries
        .iter()
        .take(MAX_CHAIN_CERTS)
        .map(|der| x509(der))
        .collect();
    let roots: Vec<X509Certificate<'_>> = input.roots.iter().filter_map(|r| x509(r)).collect();
    let mut used = vec![false; sent.len()];
    if let Some(u) = used.first_mut() {
        *u = true;
    }
    match verdict {
        Ok(()) => {
            let leaf = sent[0].as_ref().expect("an accepted leaf parses");
            assert!(
                path(&sent, &roots, 0, &mut used, Some(input.now)),
                "accepted without a path x509-parser verifies within its dates: {input_chain}",
                input_chain = names(&sent)
            );
            assert!(
                names_host(leaf, &input.host),
                "accepted for {:?}, which the leaf does not name",
                input.host
            );
        }
        Err(ServerCertFailure::UnknownCa) => assert!(
            sent.is_empty() || !path(&sent, &roots, 0, &mut used, None),
            "refused as unknown CA, yet x509-parser finds a path: {}",
            names(&sent)
        ),
        Err(ServerCertFailure::HostnameMismatch { expected, .. }) => {
            assert_eq!(expected, input.host);
            let leaf = sent[0].as_ref().expect("a leaf judged on its names parses");
            assert!(
                !names_host(leaf, &input.host),
                "refused for the host name {:?}, which the leaf names",
                input.host
            );
        }
        Err(ServerCertFailure::Expired | ServerCertFailure::NotYetValid) => {
            assert!(
                sent.iter().flatten().any(|c| !within(c, input.now)),
                "refused on dates, yet every certificate sent is within its dates at {}",
                input.now
            );
            assert!(
                !path(&sent, &roots, 0, &mut used, Some(input.now)),
                "refused on dates, yet x509-parser finds a path within its dates: {}",
                names(&sent)
            );
        }
        Err(ServerCertFailure::Invalid(_)) => {}
    }
});

/// The subjects of the parsed chain, for messages.
fn names(sent: &[Option<X509Certificate<'_>>]) -> String {
    sent.iter()
        .map(|c| match c {
            Some(c) => c.subject().to_string(),
            None => "(unparsed)".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" <- ")
}
