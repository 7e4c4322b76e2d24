//! The IoT endpoint check: an AWS IoT data endpoint, or a DNS name when custom endpoints are allowed.

use alloc::format;
use alloc::string::String;

use crate::Problem;

/// Why an endpoint was rejected, or what kind it is.
pub(crate) fn check(endpoint: &str, allow_custom: bool) -> Result<String, (Problem, String)> {
    let fail = |why: String| Err((Problem::BadEndpoint, why));
    if endpoint.is_empty() {
        return fail(String::from("the endpoint is empty"));
    }
    if endpoint.chars().any(char::is_whitespace) {
        return fail(format!(
            "the endpoint `{}` contains whitespace (a stray space or newline?): remove it",
            endpoint.escape_debug()
        ));
    }
    if endpoint.contains("://") {
        return fail(format!(
            "the endpoint `{endpoint}` has a scheme: give the host name only, without `mqtts://`"
        ));
    }
    if endpoint.contains(':') {
        return fail(format!(
            "the endpoint `{endpoint}` has a port: give the host name only (the port is chosen \
             by the connection settings)"
        ));
    }
    if endpoint.contains('/') {
        return fail(format!(
            "the endpoint `{endpoint}` has a path: give the host name only"
        ));
    }
    if !is_dns_name(endpoint) {
        return fail(format!(
            "the endpoint `{endpoint}` is not a valid DNS host name (labels of letters, digits \
             and `-`, at most 63 characters each, 253 in all)"
        ));
    }
    // Host names are case-insensitive: match the AWS pattern on the lowercase form.
    let lower = endpoint.to_ascii_lowercase();
    if is_aws_iot(&lower) {
        return Ok(format!("`{endpoint}` is an AWS IoT Core ATS data endpoint"));
    }
    if allow_custom {
        return Ok(format!(
            "`{endpoint}` is a valid host name (custom endpoints allowed)"
        ));
    }
    if is_legacy_aws_iot(&lower) {
        return fail(format!(
            "`{endpoint}` is a legacy (Symantec/VeriSign) AWS IoT endpoint, which does not chain \
             to Amazon Root CA 1: use the `-ats` endpoint from `aws iot describe-endpoint \
             --endpoint-type iot:Data-ATS`"
        ));
    }
    fail(format!(
        "`{endpoint}` is not an AWS IoT data endpoint (`<prefix>-ats.iot.<region>.amazonaws.com`): \
         get it with `aws iot describe-endpoint --endpoint-type iot:Data-ATS`, or allow custom \
         endpoints for a local broker"
    ))
}

/// Host name syntax (RFC 1123): labels of `[A-Za-z0-9-]`, 1–63 long, not starting or
/// ending with `-`; at most 253 characters; an optional trailing dot is not accepted.
pub(crate) fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Splits a lowercase `<prefix>.iot.<region>.amazonaws.com[.cn]` into (prefix, region).
fn aws_parts(endpoint: &str) -> Option<(&str, &str)> {
    let rest = endpoint
        .strip_suffix(".amazonaws.com")
        .or_else(|| endpoint.strip_suffix(".amazonaws.com.cn"))?;
    let (head, region) = rest.rsplit_once('.')?;
    let prefix = head.strip_suffix(".iot")?;
    let region_ok = region.len() >= 5
        && region.contains('-')
        && region
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase())
        && region.bytes().last().is_some_and(|b| b.is_ascii_digit())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (region_ok && !prefix.is_empty() && !prefix.contains('.')).then_some((prefix, region))
}

/// Whether `host` is an AWS IoT Core ATS data endpoint
/// (`<prefix>-ats.iot.<region>.amazonaws.com`, any case): the one rule, used by the endpoint
/// check and by the registration client (an answer naming such an endpoint carries a
/// certificate AWS IoT Core issued).
pub fn is_aws_iot_endpoint(host: &str) -> bool {
    is_aws_iot(&host.to_ascii_lowercase())
}

fn is_aws_iot(endpoint: &str) -> bool {
    aws_parts(endpoint).is_some_and(|(prefix, _)| {
        prefix.strip_suffix("-ats").is_some_and(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    })
}

fn is_legacy_aws_iot(endpoint: &str) -> bool {
    aws_parts(endpoint).is_some_and(|(prefix, _)| !prefix.ends_with("-ats"))
}
