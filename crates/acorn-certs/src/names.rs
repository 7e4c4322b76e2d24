//! Distinguished names as text (RFC 4514), for reports and messages.
//!
//! With the `dn-names` feature (the default) this is x509-cert's own `Display`, which names
//! every attribute type const-oid's OID database knows. Without it (the ESP32-C3 firmware) the
//! common attribute types of device, broker and CA certificates are named from a small table,
//! with the same escaping, and any other is printed as `<dotted OID>=#<DER hex>` (RFC 4514
//! §2.4): the same text for the certificates this project meets, without linking the database.

use alloc::string::String;
use x509_cert::name::Name;

/// `name` in RFC 4514 form (`CN=acorn-0001,O=Acorn`).
#[cfg(feature = "dn-names")]
pub(crate) fn display(name: &Name) -> String {
    use alloc::string::ToString;
    name.to_string()
}

/// `name` in RFC 4514 form (`CN=acorn-0001,O=Acorn`).
#[cfg(not(feature = "dn-names"))]
pub(crate) fn display(name: &Name) -> String {
    let mut out = String::new();
    // RFC 4514 §2.1: the last RDN first.
    for (i, rdn) in name.0.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.0.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let _ = plain::write_atv(&mut out, atv);
        }
    }
    out
}

#[cfg(not(feature = "dn-names"))]
mod plain {
    use alloc::string::String;
    use const_oid::ObjectIdentifier;
    use core::fmt::{self, Write};
    use der::asn1::{Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
    use der::{Encode, Tag, Tagged};
    use x509_cert::attr::AttributeTypeAndValue;

    /// The attribute types named without the database (their shortest names in it).
    const SHORT_NAMES: &[(ObjectIdentifier, &str)] = &[
        (ObjectIdentifier::new_unwrap("2.5.4.3"), "CN"),
        (ObjectIdentifier::new_unwrap("2.5.4.6"), "C"),
        (ObjectIdentifier::new_unwrap("2.5.4.7"), "L"),
        (ObjectIdentifier::new_unwrap("2.5.4.8"), "ST"),
        (ObjectIdentifier::new_unwrap("2.5.4.10"), "O"),
        (ObjectIdentifier::new_unwrap("2.5.4.11"), "OU"),
        (ObjectIdentifier::new_unwrap("2.5.4.5"), "SERIALNUMBER"),
        (
            ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25"),
            "DC",
        ),
        (
            ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.1"),
            "EMAIL",
        ),
    ];

    pub(super) fn write_atv(out: &mut String, atv: &AttributeTypeAndValue) -> fmt::Result {
        let value = &atv.value;
        let text = match value.tag() {
            Tag::PrintableString => PrintableStringRef::try_from(value).ok().map(|s| s.as_str()),
            Tag::Utf8String => Utf8StringRef::try_from(value).ok().map(|s| s.as_str()),
            Tag::Ia5String => Ia5StringRef::try_from(value).ok().map(|s| s.as_str()),
            Tag::TeletexString => TeletexStringRef::try_from(value).ok().map(|s| s.as_str()),
            _ => None,
        };
        let key = SHORT_NAMES
            .iter()
            .find(|(oid, _)| *oid == atv.oid)
            .map(|(_, name)| *name);
        match (key, text) {
            (Some(key), Some(text)) => {
                write!(out, "{key}=")?;
                let mut chars = text.char_indices().peekable();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '#' if i == 0 => out.write_str("\\#")?,
                        ' ' if i == 0 || chars.peek().is_none() => out.write_str("\\ ")?,
                        '"' | '+' | ',' | ';' | '<' | '>' | '\\' => write!(out, "\\{c}")?,
                        '\x00'..='\x1f' | '\x7f' => write!(out, "\\{:02x}", c as u8)?,
                        _ => out.write_char(c)?,
                    }
                }
            }
            _ => {
                let der = value.to_der().map_err(|_| fmt::Error)?;
                write!(out, "{}=#", atv.oid)?;
                for b in der {
                    write!(out, "{b:02x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::str::FromStr;

    #[test]
    fn common_names_print_as_rfc_4514() {
        let name = Name::from_str("CN=acorn-0001,OU=Devices,O=Acorn\\, Inc.,C=GB").unwrap();
        assert_eq!(
            display(&name),
            "CN=acorn-0001,OU=Devices,O=Acorn\\, Inc.,C=GB"
        );
    }

    /// Without the database the table gives the database's own text (x509-cert's `Display`
    /// is still there to compare with in a test build).
    #[cfg(not(feature = "dn-names"))]
    #[test]
    fn the_table_prints_what_the_database_prints() {
        use alloc::string::ToString;
        for text in [
            "CN=a,C=GB,L=Leeds,ST=West Yorkshire,O=Acorn,OU=Devices",
            "SERIALNUMBER=42,DC=example,DC=com",
            "EMAILADDRESS=ops@example.com",
            "CN=\\#hash\\ ,O=a\\+b",
        ] {
            let name = Name::from_str(text).unwrap();
            assert_eq!(display(&name), name.to_string(), "{text}");
        }
        // A type outside the table: dotted OID and the value's DER in hex (RFC 4514 §2.4).
        let name = Name::from_str("UID=someone").unwrap();
        assert_eq!(
            display(&name),
            "0.9.2342.19200300.100.1.1=#0c07736f6d656f6e65"
        );
    }
}
