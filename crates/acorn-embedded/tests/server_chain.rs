//! The chip's verifier of the broker's chain (`ServerVerifier::check_chain`) on chains an
//! attacker can send, made at test time with rcgen: what it must refuse (a non-CA signing, a
//! root's name on another key, an expired intermediate, too long a chain) and what it must
//! accept (intermediates in any order, P-384, host name rules). The fuzz target
//! `server_chain` checks the same verdicts against x509-parser on arbitrary chains.

use acorn_embedded::verify::{ServerCertFailure, ServerVerifier, MAX_CHAIN_CERTS};
use acorn_embedded::TrustAnchors;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
};

/// 2030-01-01: inside the default validity of rcgen certificates (1975 to 4096).
const NOW: u64 = 1_893_456_000;
const HOST: &str = "broker.chain.test";

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(name: &str, is_ca: bool) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = if is_ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params
}

fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
    KeyPair::generate_for(alg).expect("key")
}

impl Ca {
    fn root(name: &str) -> Ca {
        Ca {
            issuer: CertifiedIssuer::self_signed(
                ca_params(name, true),
                key(&PKCS_ECDSA_P256_SHA256),
            )
            .expect("root"),
        }
    }

    /// A certificate named `name` signed by this CA, a CA itself or not, with a key of `alg`.
    fn sub(&self, name: &str, is_ca: bool, alg: &'static SignatureAlgorithm) -> Ca {
        Ca {
            issuer: CertifiedIssuer::signed_by(ca_params(name, is_ca), key(alg), &self.issuer)
                .expect("sub"),
        }
    }

    fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_der(&self.der()).expect("anchors")
    }

    /// A server certificate for `sans`, DER.
    fn leaf(&self, sans: &[&str]) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, sans[0]);
        params
            .signed_by(&key(&PKCS_ECDSA_P256_SHA256), &self.issuer)
            .expect("leaf")
            .der()
            .to_vec()
    }
}

fn check(anchors: &TrustAnchors, host: &str, chain: &[&[u8]]) -> Result<(), ServerCertFailure> {
    ServerVerifier::new(anchors, NOW, host).check_chain(chain)
}

#[test]
fn a_chain_through_intermediates_is_accepted_in_any_order_and_with_extras() {
    let root = Ca::root("Chain Root");
    let inter = root.sub("Chain Intermediate", true, &PKCS_ECDSA_P256_SHA256);
    let leaf = inter.leaf(&[HOST]);
    let stranger = Ca::root("Stranger").der();
    let anchors = root.anchors();
    assert_eq!(check(&anchors, HOST, &[&leaf, &inter.der()]), Ok(()));
    assert_eq!(
        check(
            &anchors,
            HOST,
            &[&leaf, &stranger, &root.der(), &inter.der()]
        ),
        Ok(())
    );
    // Without the intermediate there is no path.
    assert_eq!(
        check(&anchors, HOST, &[&leaf]),
        Err(ServerCertFailure::UnknownCa)
    );
}

#[test]
fn a_p384_intermediate_signing_with_sha384_is_accepted() {
    let root = Ca::root("Chain Root");
    let inter = root.sub("Chain P-384", true, &PKCS_ECDSA_P384_SHA384);
    let leaf = inter.leaf(&[HOST]);
    assert_eq!(check(&root.anchors(), HOST, &[&leaf, &inter.der()]), Ok(()));
}

#[test]
fn a_certificate_that_is_no_ca_cannot_sign_a_server_certificate() {
    let root = Ca::root("Chain Root");
    let not_a_ca = root.sub("Just A Leaf", false, &PKCS_ECDSA_P256_SHA256);
    let leaf = not_a_ca.leaf(&[HOST]);
    assert_eq!(
        check(&root.anchors(), HOST, &[&leaf, &not_a_ca.der()]),
        Err(ServerCertFailure::UnknownCa)
    );
}

#[test]
fn a_root_with_the_trusted_roots_name_and_another_key_is_not_trusted() {
    let root = Ca::root("Chain Root");
    let impostor = Ca::root("Chain Root");
    let leaf = impostor.leaf(&[HOST]);
    assert_eq!(
        check(&root.anchors(), HOST, &[&leaf, &impostor.der()]),
        Err(ServerCertFailure::UnknownCa)
    );
    assert_eq!(
        check(&root.anchors(), HOST, &[&leaf]),
        Err(ServerCertFailure::UnknownCa)
    );
}

#[test]
fn an_expired_intermediate_fails_the_chain() {
    let root = Ca::root("Chain Root");
    let mut params = ca_params("Chain Old Intermediate", true);
    params.not_before = time::macros::datetime!(2000-01-01 0:00 UTC);
    params.not_after = time::macros::datetime!(2001-01-01 0:00 UTC);
    let old = Ca {
        issuer: CertifiedIssuer::signed_by(params, key(&PKCS_ECDSA_P256_SHA256), &root.issuer)
            .expect("old"),
    };
    let leaf = old.leaf(&[HOST]);
    assert_eq!(
        check(&root.anchors(), HOST, &[&leaf, &old.der()]),
        Err(ServerCertFailure::Expired)
    );
}

#[test]
fn an_expired_copy_of_the_intermediate_beside_its_renewal_does_not_fail_the_chain() {
    let root = Ca::root("Chain Root");
    let inter_key = key(&PKCS_ECDSA_P256_SHA256);
    let renewed = CertifiedIssuer::signed_by(
        ca_params("Chain Intermediate", true),
        KeyPair::from_pem(&inter_key.serialize_pem()).expect("the same key"),
        &root.issuer,
    )
    .expect("renewed");
    let mut params = ca_params("Chain Intermediate", true);
    params.not_before = time::macros::datetime!(2000-01-01 0:00 UTC);
    params.not_after = time::macros::datetime!(2001-01-01 0:00 UTC);
    let expired = CertifiedIssuer::signed_by(params, inter_key, &root.issuer).expect("expired");
    let expired_der = expired.der().to_vec();
    let renewed = Ca { issuer: renewed };
    let leaf = renewed.leaf(&[HOST]);
    let anchors = root.anchors();
    assert_eq!(
        check(&anchors, HOST, &[&leaf, &expired_der, &renewed.der()]),
        Ok(())
    );
    assert_eq!(
        check(&anchors, HOST, &[&leaf, &renewed.der(), &expired_der]),
        Ok(())
    );
}

#[test]
fn a_damaged_copy_of_the_intermediate_before_the_good_one_does_not_hide_the_path() {
    // Found by the `server_chain` fuzz target: the copy has the intermediate's name and key,
    // so it seems to have signed the leaf, but its own signature is broken; a path building
    // that follows the first fit and never goes back stops there.
    let root = Ca::root("Chain Root");
    let inter = root.sub("Chain Intermediate", true, &PKCS_ECDSA_P256_SHA256);
    let leaf = inter.leaf(&[HOST]);
    let mut damaged = inter.der();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    let anchors = root.anchors();
    assert_eq!(
        check(&anchors, HOST, &[&leaf, &damaged, &inter.der()]),
        Ok(())
    );
    assert_eq!(
        check(&anchors, HOST, &[&leaf, &damaged]),
        Err(ServerCertFailure::UnknownCa)
    );
}

#[test]
fn no_more_than_max_chain_certs_are_looked_at() {
    let root = Ca::root("Chain Root");
    let inter = root.sub("Chain Intermediate", true, &PKCS_ECDSA_P256_SHA256);
    let leaf = inter.leaf(&[HOST]);
    let filler = Ca::root("Filler").der();
    let inter_der = inter.der();
    let mut chain: Vec<&[u8]> = vec![&leaf];
    chain.extend(std::iter::repeat_n(filler.as_slice(), MAX_CHAIN_CERTS - 2));
    chain.push(&inter_der);
    assert_eq!(check(&root.anchors(), HOST, &chain), Ok(()), "at the limit");
    chain.insert(1, &filler);
    assert_eq!(
        check(&root.anchors(), HOST, &chain),
        Err(ServerCertFailure::UnknownCa),
        "past the limit"
    );
}

#[test]
fn host_names_follow_the_wildcard_and_address_rules() {
    let root = Ca::root("Chain Root");
    let leaf = root.leaf(&[HOST, "*.iot.chain.test", "127.0.0.1"]);
    let anchors = root.anchors();
    for host in [
        HOST,
        "BROKER.chain.test.",
        "a1-ats.iot.chain.test",
        "127.0.0.1",
    ] {
        assert_eq!(check(&anchors, host, &[&leaf]), Ok(()), "{host}");
    }
    for host in [
        "other.chain.test",
        "a.b.iot.chain.test",
        "iot.chain.test",
        ".iot.chain.test",
        "127.0.0.01",
        "127.0.0.2",
    ] {
        assert!(
            matches!(
                check(&anchors, host, &[&leaf]),
                Err(ServerCertFailure::HostnameMismatch { .. })
            ),
            "{host}"
        );
    }
}
