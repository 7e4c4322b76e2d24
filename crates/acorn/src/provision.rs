//! `acorn certs import | show | provision`: a device identity in NVS partition images, through
//! the certificate store (`acorn-certs` over `acorn-nvs`), for factory lines and support.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use acorn_certs::nvs_kv::NvsCertKv;
use acorn_certs::{
    is_valid_device_id, validate, CertStore, DeviceCertificates, PrivateKey, ValidationOptions,
};
use acorn_nvs::{MemFlash, Mode, Nvs, NvsKeys};
use anyhow::{bail, Context, Result};

use crate::certs::{print_certificate_info, print_report, report_json, unix_now};
use crate::image_file::{load_keys, maybe_keys, open, open_for_change, write_atomically};
use crate::nvs::parse_size;

/// The certificate, key and endpoint files of one device.
#[derive(clap::Args, Debug, Clone)]
pub struct IdentityArgs {
    /// Device certificate file (PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Private key file (PKCS#1 `RSA PRIVATE KEY`, PKCS#8, SEC1; PEM or DER).
    #[arg(long, value_name = "FILE")]
    pub private_key: PathBuf,
    /// AWS IoT data endpoint, e.g. `abc123-ats.iot.eu-west-1.amazonaws.com`.
    #[arg(long, value_name = "HOST")]
    pub endpoint: String,
    /// Device id (`[A-Za-z0-9_-]{1,128}`), also the MQTT client id.
    #[arg(long)]
    pub device_id: String,
    /// Accept any DNS name as endpoint (a local broker).
    #[arg(long)]
    pub allow_custom_endpoint: bool,
}

/// `acorn certs import`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The NVS image to store into (created if it does not exist).
    #[arg(long)]
    pub image: PathBuf,
    /// The nvs_keys partition of an encrypted image.
    #[arg(long)]
    pub nvs_keys: Option<PathBuf>,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Size of a new image (decimal or 0x hex).
    #[arg(long, default_value = "0x6000")]
    pub size: String,
}

/// `acorn certs show`.
#[derive(clap::Args, Debug, Clone)]
pub struct ShowArgs {
    /// The NVS image.
    #[arg(long)]
    pub image: PathBuf,
    /// The nvs_keys partition of an encrypted image.
    #[arg(long)]
    pub nvs_keys: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Accept any DNS name as endpoint (a local broker).
    #[arg(long)]
    pub allow_custom_endpoint: bool,
}

/// `acorn certs provision`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProvisionArgs {
    /// Certificate, key, endpoint and device id of one device (not with --batch).
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub cert: Option<PathBuf>,
    /// Private key file of one device.
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub private_key: Option<PathBuf>,
    /// IoT endpoint of one device.
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub endpoint: Option<String>,
    /// Device id of one device.
    #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
    pub device_id: Option<String>,
    /// The image to write (one device).
    #[arg(short = 'o', long = "out", required_unless_present = "batch")]
    pub out: Option<PathBuf>,
    /// A CSV `device_id,cert,private_key,endpoint` (paths relative to the current directory):
    /// one image per row into --out-dir.
    #[arg(long, requires = "out_dir")]
    pub batch: Option<PathBuf>,
    /// Where --batch writes `<device_id>.bin` (and `<device_id>.nvs_keys.bin` when encrypting).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Partition size (decimal or 0x hex).
    #[arg(long, default_value = "0x6000")]
    pub size: String,
    /// Encrypt the image (ESP-IDF NVS encryption).
    #[arg(long)]
    pub encrypt: bool,
    /// nvs_keys partition file: used if it exists, else made (batch without it: one key file per device).
    #[arg(long, requires = "encrypt")]
    pub nvs_keys: Option<PathBuf>,
    /// Accept any DNS name as endpoint (a local broker).
    #[arg(long)]
    pub allow_custom_endpoint: bool,
    /// Write a claim identity (fleet provisioning by claim) instead of a device identity:
    /// --cert/--private-key are the shared claim certificate and its key, --endpoint the
    /// claim endpoint (`host[:port]`), --device-id the id the device provisions itself as
    /// (NVS namespace `mqtt_claim`; the device makes its own key at first boot).
    #[arg(long, conflicts_with = "batch")]
    pub claim: bool,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Wi-Fi network the device joins (NVS namespace `wifi`, key `ssid`), so one factory image
    /// holds identity and network.
    #[arg(long, value_name = "SSID")]
    pub wifi_ssid: Option<String>,
    /// Its WPA2 password (key `password`). Prefer --wifi-password-file or ACORN_WIFI_PASSWORD:
    /// a password on the command line is visible to other users in `ps`.
    #[arg(
        long,
        env = "ACORN_WIFI_PASSWORD",
        hide_env_values = true,
        requires = "wifi_ssid",
        conflicts_with = "wifi_password_file"
    )]
    pub wifi_password: Option<String>,
    /// A file holding the Wi-Fi password.
    #[arg(long, value_name = "FILE", requires = "wifi_ssid")]
    pub wifi_password_file: Option<PathBuf>,
}

/// Wi-Fi credentials for the factory image, checked as a station would need them.
struct Wifi {
    ssid: String,
    password: acorn_transport::SecretString,
}

impl Wifi {
    fn from_args(args: &ProvisionArgs) -> Result<Option<Self>> {
        use acorn_transport::ExposeSecret as _;
        let Some(ssid) = &args.wifi_ssid else {
            return Ok(None);
        };
        if ssid.is_empty() || ssid.len() > 32 {
            bail!(
                "--wifi-ssid must be 1 to 32 bytes (an 802.11 SSID), got {}",
                ssid.len()
            );
        }
        let password = match (&args.wifi_password, &args.wifi_password_file) {
            (Some(p), _) => acorn_transport::SecretString::from(p.clone()),
            (None, Some(path)) => acorn_transport::SecretString::from(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!("cannot read the Wi-Fi password file {}", path.display())
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            (None, None) => acorn_transport::SecretString::from(""),
        };
        let p = password.expose_secret();
        let hex_psk = p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !(p.is_empty() || (8..=63).contains(&p.len()) || hex_psk) {
            bail!(
                "the Wi-Fi password must be empty (an open network), 8 to 63 characters (WPA2) \
                 or 64 hex digits; it has {} characters",
                p.len()
            );
        }
        Ok(Some(Self {
            ssid: ssid.clone(),
            password,
        }))
    }

    /// Writes namespace `wifi`: `ssid` and `password` as strings, as the firmware reads them.
    fn store(&self, nvs: &mut Nvs<MemFlash>) -> Result<()> {
        use acorn_transport::ExposeSecret as _;
        let ns = nvs
            .namespace("wifi")
            .context("cannot make the NVS namespace `wifi`")?;
        nvs.set_str(ns, "ssid", &self.ssid)
            .context("cannot store the Wi-Fi SSID")?;
        nvs.set_str(ns, "password", self.password.expose_secret())
            .context("cannot store the Wi-Fi password")?;
        Ok(())
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} file `{}`", path.display()))
}

fn certificates(
    cert: &Path,
    key: &Path,
    endpoint: &str,
    device_id: &str,
) -> Result<DeviceCertificates> {
    if !is_valid_device_id(device_id) {
        bail!("device id `{device_id}` is not 1 to 128 of A-Z a-z 0-9 _ -");
    }
    Ok(DeviceCertificates {
        device_certificate: read(cert, "certificate")?,
        private_key: PrivateKey::new(read(key, "private key")?),
        iot_endpoint: endpoint.to_string(),
        device_id: device_id.to_string(),
    })
}

/// Validates and stores `certs` into `nvs`; a rejected set prints its report and writes nothing.
fn store(nvs: &mut Nvs<MemFlash>, certs: &DeviceCertificates, allow_custom: bool) -> Result<()> {
    let mut store = CertStore::new(NvsCertKv::new(nvs)).allow_custom_endpoint(allow_custom);
    // The store's error already names the verdict and the first failing check.
    store
        .store(certs, unix_now())
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e} (run `acorn certs check` to see every check)"))
}

fn blank(size: usize, keys: Option<&NvsKeys>) -> Result<Nvs<MemFlash>> {
    Ok(Nvs::open_with(
        MemFlash::new(size),
        0,
        size as u32,
        keys,
        Mode::ReadWrite,
    )?)
}

/// `acorn certs import`: validate, then store into an existing or new image.
pub fn import(args: &ImportArgs) -> Result<ExitCode> {
    let id = &args.identity;
    let certs = certificates(&id.cert, &id.private_key, &id.endpoint, &id.device_id)?;
    let keys = maybe_keys(args.nvs_keys.as_deref())?;
    let mut nvs = if args.image.exists() {
        open_for_change(&args.image, keys.as_ref())?
    } else {
        blank(parse_size(&args.size)?, keys.as_ref())?
    };
    store(&mut nvs, &certs, id.allow_custom_endpoint)?;
    write_atomically(&args.image, nvs.release().bytes())?;
    eprintln!(
        "stored the identity of `{}` in {}",
        certs.device_id,
        args.image.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `acorn certs show` of an image without a device identity: its claim identity (fleet
/// provisioning by claim), if it holds one, else an error that says how to provision it.
fn show_claim(nvs: &mut Nvs<MemFlash>, args: &ShowArgs) -> Result<ExitCode> {
    use acorn_register::claim::{CLAIM_KEYS, CLAIM_NAMESPACE};
    let claim = nvs.find_namespace(CLAIM_NAMESPACE).map(|ns| {
        let mut text = |key: &str| nvs.get_string(ns, key).ok().flatten().unwrap_or_default();
        (text(CLAIM_KEYS[3]), text(CLAIM_KEYS[2]))
    });
    let Some((device_id, endpoint)) = claim else {
        bail!(
            "{} holds no device identity (namespace `mqtt_certs`); provision it with `acorn certs import`, \
             or with a claim certificate (`acorn certs provision --claim`)",
            args.image.display()
        );
    };
    if args.json {
        let out = serde_json::json!({
            "device_id": device_id,
            "claim": {"endpoint": endpoint},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("device id:     {device_id}");
        println!(
            "identity:      none yet: a claim identity (namespace `{CLAIM_NAMESPACE}`); the device provisions itself by claim at {endpoint} at its first start"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `acorn certs show`: what the image holds, checked; never the key itself.
pub fn show(args: &ShowArgs) -> Result<ExitCode> {
    let keys = maybe_keys(args.nvs_keys.as_deref())?;
    let bytes = crate::image_file::load_image(&args.image)?;
    let mut nvs = open(bytes, keys.as_ref(), Mode::ReadOnly, &args.image)?;
    let mut store = CertStore::new(NvsCertKv::new(&mut nvs));
    let flag = store.validity_flag().map_err(|e| anyhow::anyhow!("{e}"))?;
    let meta = store.metadata().map_err(|e| anyhow::anyhow!("{e}"))?;
    let kv = store.kv_mut();
    let mut value = |key: &str| -> Result<Option<Vec<u8>>> {
        use acorn_certs::CertKv;
        let Some(len) = kv.stored_len(key)? else {
            return Ok(None);
        };
        let mut buf = vec![0u8; len];
        let n = kv.read(key, &mut buf)?.unwrap_or(0);
        buf.truncate(n);
        Ok(Some(buf))
    };
    let (Some(cert), Some(key)) = (value("device_cert")?, value("private_key")?) else {
        return show_claim(&mut nvs, args);
    };
    let endpoint =
        String::from_utf8_lossy(&value("iot_endpoint")?.unwrap_or_default()).into_owned();
    let certs = DeviceCertificates {
        device_certificate: cert,
        private_key: PrivateKey::new(key),
        iot_endpoint: endpoint.clone(),
        device_id: meta
            .as_ref()
            .map(|m| m.device_id.clone())
            .unwrap_or_default(),
    };
    // Judged with any DNS name accepted as endpoint: an identity made for a local broker
    // (`acorn dev up`'s `localhost`) is not invalid; that it is not an AWS endpoint is a note.
    let mut options = ValidationOptions::new(unix_now()).allow_custom_endpoint(true);
    if let Some(m) = &meta {
        options = options.expect_fingerprint(&m.certificate_fingerprint);
    }
    let report = validate(&certs, &options);
    let strict = validate(&certs, &options.allow_custom_endpoint(false));
    let endpoint_note = (!args.allow_custom_endpoint
        && report.is_valid()
        && strict.failures().contains(&acorn_certs::Problem::BadEndpoint))
    .then(|| {
        format!(
            "`{endpoint}` is not an AWS IoT endpoint: fine for a local broker (such as `acorn dev up`), \
             not for AWS IoT Core"
        )
    });
    let (rotation_state, candidate) = rotation_slot(&mut nvs)?;
    if args.json {
        let out = serde_json::json!({
            "device_id": certs.device_id,
            "iot_endpoint": endpoint,
            "cert_valid": flag,
            "metadata": meta,
            "report": report_json(&report),
            "note": endpoint_note,
            "rotation": {"state": rotation_state, "candidate": candidate},
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "device id:      {}", certs.device_id)?;
    writeln!(out, "endpoint:       {endpoint}")?;
    writeln!(
        out,
        "stored status:  {}",
        match flag {
            Some(true) => "valid (cert_valid = 1)",
            Some(false) =>
                "NOT valid (cert_valid = 0: a store was interrupted or the identity was erased)",
            None => "no cert_valid flag",
        }
    )?;
    if let Some(info) = &report.certificate {
        print_certificate_info(info, &mut out)?;
    }
    if let Some(m) = &meta {
        writeln!(
            out,
            "metadata:       stored_at {}, last_used {}, validation_attempts {}, is_valid {}",
            m.stored_at,
            m.last_used.map_or("never".to_string(), |t| t.to_string()),
            m.validation_attempts,
            m.is_valid
        )?;
    }
    print_report(&report, &mut out)?;
    if let Some(note) = &endpoint_note {
        writeln!(out, "note: {note}")?;
    }
    writeln!(out, "rotation:       {rotation_state}")?;
    if let Some(c) = &candidate {
        writeln!(
            out,
            "candidate:      certificate {} (stored_at {}) in namespace `{}`",
            c.certificate_fingerprint,
            c.stored_at,
            acorn_certs::CANDIDATE_NAMESPACE
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a certificate rotation stands in the image (the candidate slot, namespace
/// `mqtt_certs_next`), and the candidate's metadata when one is there.
fn rotation_slot<F: embedded_storage::nor_flash::NorFlash>(
    nvs: &mut acorn_nvs::Nvs<F>,
) -> Result<(&'static str, Option<acorn_certs::CertificateMetadata>)> {
    use acorn_certs::CertKv;
    let mut kv = NvsCertKv::in_namespace(nvs, acorn_certs::CANDIDATE_NAMESPACE);
    let marker = kv.read_u8(acorn_certs::slots::KEY_COMMIT)? == Some(1);
    let anything = kv.stored_len("device_cert")?.is_some() || kv.read_u8("cert_valid")?.is_some();
    let mut store = CertStore::new(kv);
    let complete = store.validity_flag().map_err(|e| anyhow::anyhow!("{e}"))? == Some(true);
    let meta = store.metadata().map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = match (marker, complete, anything) {
        (true, _, _) => "a commit of a new certificate was interrupted: the next start finishes it",
        (false, true, _) => {
            "a new certificate waits for its trial connection: the next start drops it (the rotation starts again when triggered)"
        }
        (false, false, true) => {
            "an interrupted rotation left part of a new identity: the next start erases it"
        }
        (false, false, false) => "none under way",
    };
    Ok((state, meta.filter(|_| complete || marker)))
}

/// `acorn certs provision`: flashable images, one device or a batch.
pub fn provision(args: &ProvisionArgs) -> Result<ExitCode> {
    let size = parse_size(&args.size)?;
    // Bad Wi-Fi settings stop everything before any image is written.
    Wifi::from_args(args)?;
    match (&args.batch, &args.out_dir) {
        (Some(csv), Some(dir)) => batch(args, csv, dir, size),
        _ => {
            let (Some(cert), Some(key), Some(endpoint), Some(id), Some(out)) = (
                &args.cert,
                &args.private_key,
                &args.endpoint,
                &args.device_id,
                &args.out,
            ) else {
                bail!("give --cert, --private-key, --endpoint, --device-id and -o, or --batch with --out-dir");
            };
            let keys = if args.encrypt {
                let path = args
                    .nvs_keys
                    .as_deref()
                    .context("--encrypt needs --nvs-keys K.bin (used if it exists, else made)")?;
                Some(keys_at(path)?)
            } else {
                None
            };
            if args.claim {
                let claim = acorn_register::claim::ClaimIdentity {
                    certificate_pem: String::from_utf8(read(cert, "claim certificate")?)
                        .context("the claim certificate is not PEM text")?,
                    private_key_pem: acorn_transport::SecretString::from(
                        String::from_utf8(read(key, "claim key")?)
                            .context("the claim key is not PEM text")?,
                    ),
                    endpoint: endpoint.clone(),
                    device_id: id.clone(),
                };
                provision_image(out, size, keys.as_ref(), args, |nvs| {
                    claim
                        .store_into(nvs)
                        .map_err(|e| anyhow::anyhow!("the claim identity: {e}"))
                })?;
                eprintln!(
                    "wrote {} with the claim identity for `{id}` (it provisions itself at first boot)",
                    out.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let certs = certificates(cert, key, endpoint, id)?;
            provision_one(&certs, out, size, keys.as_ref(), args)?;
            eprintln!("wrote {} for `{id}`", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads an nvs_keys file, or makes one there.
fn keys_at(path: &Path) -> Result<NvsKeys> {
    if path.exists() {
        return load_keys(path);
    }
    let keys = NvsKeys::generate(&mut rand::rngs::OsRng);
    write_atomically(path, &keys.to_partition())?;
    eprintln!("made new NVS keys in {}", path.display());
    Ok(keys)
}

fn provision_one(
    certs: &DeviceCertificates,
    out: &Path,
    size: usize,
    keys: Option<&NvsKeys>,
    args: &ProvisionArgs,
) -> Result<()> {
    provision_image(out, size, keys, args, |nvs| {
        store(nvs, certs, args.allow_custom_endpoint)
    })
}

/// Makes a factory image at `out`: what `identity` writes, then the Wi-Fi settings.
fn provision_image(
    out: &Path,
    size: usize,
    keys: Option<&NvsKeys>,
    args: &ProvisionArgs,
    identity: impl FnOnce(&mut Nvs<MemFlash>) -> Result<()>,
) -> Result<()> {
    if out.exists() && !args.force {
        bail!("{} exists; add --force to replace it", out.display());
    }
    let mut nvs = blank(size, keys)?;
    identity(&mut nvs)?;
    if let Some(wifi) = Wifi::from_args(args)? {
        wifi.store(&mut nvs)?;
    }
    write_atomically(out, nvs.release().bytes())
}

/// One row of a batch CSV.
struct BatchRow {
    line: usize,
    device_id: String,
    cert: PathBuf,
    key: PathBuf,
    endpoint: String,
}

fn parse_batch(text: &str, name: &str) -> Result<Vec<Result<BatchRow, String>>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (_, header) = lines.next().with_context(|| {
        format!("{name} is empty; it needs a `device_id,cert,private_key,endpoint` header")
    })?;
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |want: &str| {
        columns.iter().position(|c| *c == want).with_context(|| {
            format!(
                "{name}:1: no `{want}` column; the header is `device_id,cert,private_key,endpoint`"
            )
        })
    };
    let (d, c, k, e) = (
        col("device_id")?,
        col("cert")?,
        col("private_key")?,
        col("endpoint")?,
    );
    Ok(lines
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |n: usize| f.get(n).copied().filter(|v| !v.is_empty());
            match (get(d), get(c), get(k), get(e)) {
                (Some(d), Some(c), Some(k), Some(e)) => Ok(BatchRow {
                    line: i + 1,
                    device_id: d.to_string(),
                    cert: PathBuf::from(c),
                    key: PathBuf::from(k),
                    endpoint: e.to_string(),
                }),
                _ => Err(format!(
                    "{name}:{}: a field is missing (need device_id,cert,private_key,endpoint)",
                    i + 1
                )),
            }
        })
        .collect())
}

fn batch(args: &ProvisionArgs, csv: &Path, dir: &Path, size: usize) -> Result<ExitCode> {
    let name = csv.display().to_string();
    let text = std::fs::read_to_string(csv).with_context(|| format!("cannot read {name}"))?;
    let rows = parse_batch(&text, &name)?;
    // The images and key files of a whole batch: a directory only its owner may enter.
    acorn_files::create_private_dir(dir)?;
    let shared_keys = match (args.encrypt, &args.nvs_keys) {
        (true, Some(path)) => Some(keys_at(path)?),
        _ => None,
    };
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut failures = Vec::new();
    for row in &rows {
        let result = row
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|row| {
                let certs = certificates(&row.cert, &row.key, &row.endpoint, &row.device_id)
                    .with_context(|| format!("{name}:{}", row.line))?;
                let keys = match (&shared_keys, args.encrypt) {
                    (Some(k), _) => Some(k.clone()),
                    (None, true) => Some(keys_at(
                        &dir.join(format!("{}.nvs_keys.bin", row.device_id)),
                    )?),
                    (None, false) => None,
                };
                provision_one(
                    &certs,
                    &dir.join(format!("{}.bin", row.device_id)),
                    size,
                    keys.as_ref(),
                    args,
                )
                .with_context(|| format!("{name}:{} (`{}`)", row.line, row.device_id))
            });
        if let Err(err) = result {
            bar.suspend(|| eprintln!("skipped: {err:#}"));
            failures.push(err);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let done = rows.len() - failures.len();
    eprintln!(
        "provisioned {done} of {} devices into {}; {} failed",
        rows.len(),
        dir.display(),
        failures.len()
    );
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
