//! Validation of registration fields (device id, serial number, MAC address, firmware version).
//! Each check returns the normalised value or a message saying what is wrong and what a valid
//! value looks like. [`check_registration`] runs them all, and the CSR check, on a whole
//! registration body: everything the backend decides before it touches the registry or the CA.

use crate::ca::{CheckedCsr, KeyType, LocalCa};
use crate::error::CsrError;

/// A registration body whose fields all passed: the normalised fields, and where the device's
/// key comes from.
#[derive(Debug)]
pub struct CheckedRegistration {
    /// The device id (also the certificate CN).
    pub device_id: String,
    /// The hardware serial number.
    pub serial_number: String,
    /// The MAC address, `AA:BB:CC:DD:EE:FF`.
    pub mac_address: String,
    /// The firmware version.
    pub firmware_version: String,
    /// The device's CSR (parsed, self-signature verified, CN = device id, key accepted), or
    /// `None` when the backend makes the key.
    pub csr: Option<CheckedCsr>,
    /// The key type the backend makes when there is no CSR.
    pub key_type: KeyType,
}

/// Why a registration body is refused (the client's to fix: HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationRefusal {
    /// A field is invalid: the API error code (`invalid_device_id`, ...) and what to fix.
    #[error("{message}")]
    Field {
        /// The API error code.
        code: &'static str,
        /// What is wrong and what a valid value looks like.
        message: String,
    },
    /// The CSR is refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
}

/// Checks a registration body in the order the API answers: device id, serial number, MAC
/// address, firmware version, `keyType` (only without a CSR), then the CSR. A pure function:
/// no registry, no CA, no I/O.
pub fn check_registration(
    req: &acorn_api::RegisterRequest,
) -> Result<CheckedRegistration, RegistrationRefusal> {
    let field = |code: &'static str| move |message| RegistrationRefusal::Field { code, message };
    let device_id = device_id(&req.device_id).map_err(field("invalid_device_id"))?;
    let serial_number =
        serial_number(&req.serial_number).map_err(field("invalid_serial_number"))?;
    let mac_address = mac_address(&req.mac_address).map_err(field("invalid_mac_address"))?;
    let firmware_version =
        firmware_version(&req.firmware_version).map_err(field("invalid_firmware_version"))?;
    let key_type = match (&req.csr, &req.key_type) {
        (Some(_), Some(_)) => {
            return Err(field("invalid_key_type")(
                "keyType chooses the key the backend generates; omit it when you send a csr"
                    .to_owned(),
            ))
        }
        (_, Some(name)) => KeyType::parse(name).ok_or_else(|| {
            field("invalid_key_type")(format!(
                "keyType must be \"p256\" (default) or \"rsa2048\", got {:?}",
                name.chars().take(20).collect::<String>()
            ))
        })?,
        _ => KeyType::P256,
    };
    let csr = match &req.csr {
        Some(pem) => Some(LocalCa::check_csr(&device_id, pem)?),
        None => None,
    };
    Ok(CheckedRegistration {
        device_id,
        serial_number,
        mac_address,
        firmware_version,
        csr,
        key_type,
    })
}

/// Device id: 1 to 128 of `A-Z a-z 0-9 _ -` (an AWS IoT thing name and MQTT client id) —
/// exactly [`acorn_mqtt::check_device_id`], the one rule; this only words the refusal.
pub fn device_id(value: &str) -> Result<String, String> {
    if acorn_mqtt::check_device_id(value).is_ok() {
        return Ok(value.to_owned());
    }
    if value.is_empty() || value.len() > 128 {
        return Err(format!(
            "deviceId must be 1 to 128 characters long, got {}",
            value.chars().count()
        ));
    }
    let bad = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        .unwrap_or('?');
    Err(format!(
        "deviceId may contain only letters A-Z a-z, digits, '_' and '-'; found {bad:?}"
    ))
}

/// Hardware serial number: 1 to 64 of `A-Z a-z 0-9 -`.
pub fn serial_number(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 64 {
        return Err(format!(
            "serialNumber must be 1 to 64 characters long, got {}",
            value.chars().count()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "serialNumber may contain only letters, digits and '-'; found {bad:?}"
        ));
    }
    Ok(value.to_owned())
}

/// MAC address: six hex pairs separated by ':' or '-' (one kind throughout), any case.
/// Normalised to upper case with colons: `AA:BB:CC:DD:EE:FF`.
pub fn mac_address(value: &str) -> Result<String, String> {
    let fail = || {
        format!(
            "macAddress must be six hex byte pairs separated by ':' or '-', like AA:BB:CC:DD:EE:FF; got {:?}",
            value.chars().take(40).collect::<String>()
        )
    };
    if value.len() != 17 {
        return Err(fail());
    }
    let sep = if value.contains(':') { ':' } else { '-' };
    let parts: Vec<&str> = value.split(sep).collect();
    if parts.len() != 6
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(fail());
    }
    Ok(parts
        .iter()
        .map(|p| p.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":"))
}

/// Firmware version: 1 to 32 printable ASCII characters, no spaces.
pub fn firmware_version(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 32 {
        return Err(format!(
            "firmwareVersion must be 1 to 32 characters long, like 1.2.3, got {}",
            value.chars().count()
        ));
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "firmwareVersion may contain only printable ASCII without spaces, like 1.2.3; found {bad:?}"
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids() {
        assert!(device_id("acorn-01_X").is_ok());
        assert!(device_id(&"a".repeat(128)).is_ok());
        assert!(device_id(&"a".repeat(129)).is_err());
        assert!(device_id("").is_err());
        assert!(device_id("a/b").is_err());
        assert!(device_id("a b").is_err());
        assert!(device_id("é").is_err());
    }

    #[test]
    fn macs_normalise() {
        assert_eq!(
            mac_address("aa:bb:cc:dd:ee:0f").as_deref(),
            Ok("AA:BB:CC:DD:EE:0F")
        );
        assert_eq!(
            mac_address("aa-bb-cc-dd-ee-0f").as_deref(),
            Ok("AA:BB:CC:DD:EE:0F")
        );
        assert!(mac_address("aa:bb-cc:dd:ee:0f").is_err());
        assert!(mac_address("aa:bb:cc:dd:ee").is_err());
        assert!(mac_address("aa:bb:cc:dd:ee:gg").is_err());
        assert!(mac_address("aabbccddeeff").is_err());
        assert!(mac_address("ä:bb:cc:dd:ee:0").is_err());
    }

    #[test]
    fn serials_and_firmware() {
        assert!(serial_number("SN-0001").is_ok());
        assert!(serial_number("SN_0001").is_err());
        assert!(serial_number(&"1".repeat(65)).is_err());
        assert!(firmware_version("1.2.3-rc1+abc").is_ok());
        assert!(firmware_version("").is_err());
        assert!(firmware_version("1 2").is_err());
        assert!(firmware_version(&"1".repeat(33)).is_err());
    }
}
