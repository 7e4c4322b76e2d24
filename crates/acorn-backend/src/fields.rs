//! Validation of registration fields (device id, serial number, MAC address, firmware version).
//! Each check returns the normalised value or a message saying what is wrong and what a valid
//! value looks like.

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
