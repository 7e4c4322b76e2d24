//! `acorn nvs`: make, inspect, check and edit ESP-IDF NVS partition images.

mod csv;
mod queue;
mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use acorn_nvs::builder::ImageBuilder;
use acorn_nvs::{format, IntValue, Mode, NvsKeys, ValueType};
use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::image_file::{load_image, maybe_keys, open, open_for_change, write_atomically};

pub use render::is_secret;

/// `acorn nvs` subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Make a partition image from an ESP-IDF generator CSV (same output, byte for byte).
    Generate(GenerateArgs),
    /// List every namespace, key, type, size and value of an image; a press queue image
    /// (namespace `press_queue`) is also summed up: presses waiting, the oldest and the
    /// newest, the dropped-press counter and the boot number.
    Dump {
        /// The partition image.
        image: PathBuf,
        /// The nvs_keys partition of an encrypted image.
        #[arg(long)]
        nvs_keys: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Show private keys instead of `<redacted N bytes>`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Report integrity problems (bad CRCs, corrupt pages, orphan chunks). Exit 0 clean, 1 not.
    Check {
        /// The partition image.
        image: PathBuf,
        /// The nvs_keys partition of an encrypted image.
        #[arg(long)]
        nvs_keys: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print one value.
    Get {
        /// The partition image.
        image: PathBuf,
        #[command(flatten)]
        at: KeyArgs,
        /// Write the raw value to this file instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Allow private keys to be shown or written.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Store one value (the image is replaced only when everything succeeded).
    Set {
        /// The partition image.
        image: PathBuf,
        #[command(flatten)]
        at: KeyArgs,
        /// u8, i8, u16, i16, u32, i32, u64, i64, string or blob.
        #[arg(long = "type")]
        value_type: String,
        /// The value (blob: hex digits). Or use --file.
        #[arg(conflicts_with = "file", required_unless_present = "file")]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Erase one key.
    Erase {
        /// The partition image.
        image: PathBuf,
        #[command(flatten)]
        at: KeyArgs,
    },
    /// Make an nvs_keys partition file with fresh random keys.
    Keygen {
        /// Output file (4096 bytes).
        out: PathBuf,
        /// Replace an existing file (its keys are lost for good).
        #[arg(long)]
        force: bool,
    },
}

/// Where a value is.
#[derive(clap::Args)]
pub struct KeyArgs {
    /// Namespace name.
    #[arg(long)]
    namespace: String,
    /// Key.
    #[arg(long)]
    key: String,
    /// The nvs_keys partition of an encrypted image.
    #[arg(long)]
    nvs_keys: Option<PathBuf>,
}

impl KeyArgs {
    /// The error text for a key that is not in the image.
    fn missing_in(&self, image: &Path) -> String {
        format!(
            "{}: no key `{}` in namespace `{}`",
            image.display(),
            self.key,
            self.namespace
        )
    }
}

/// `acorn nvs generate` arguments, as ESP-IDF's generator takes them.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The CSV (key,type,encoding,value).
    csv: PathBuf,
    /// The image to write.
    out: PathBuf,
    /// Partition size in bytes (decimal or 0x hex), a multiple of 4096.
    size: String,
    /// Encrypt the image (needs --keygen with --keyfile, or --inputkey).
    #[arg(long)]
    encrypt: bool,
    /// Make new keys and write them to --keyfile.
    #[arg(long, requires = "encrypt", conflicts_with = "inputkey")]
    keygen: bool,
    /// Where --keygen writes the nvs_keys partition.
    #[arg(long, requires = "keygen")]
    keyfile: Option<PathBuf>,
    /// Existing nvs_keys partition to encrypt with.
    #[arg(long, requires = "encrypt")]
    inputkey: Option<PathBuf>,
    /// Page format: 2 (multi-page blobs, default) or 1 (legacy blobs).
    #[arg(long, default_value = "2", value_parser = ["1", "2"])]
    version: String,
}

/// Runs an `acorn nvs` subcommand.
pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Generate(args) => generate(args),
        Command::Dump {
            image,
            nvs_keys,
            json,
            show_secrets,
        } => dump(&image, nvs_keys.as_deref(), json, show_secrets),
        Command::Check {
            image,
            nvs_keys,
            json,
        } => check(&image, nvs_keys.as_deref(), json),
        Command::Get {
            image,
            at,
            out,
            show_secrets,
        } => get(&image, &at, out.as_deref(), show_secrets),
        Command::Set {
            image,
            at,
            value_type,
            value,
            file,
        } => set(&image, &at, &value_type, value.as_deref(), file.as_deref()),
        Command::Erase { image, at } => erase(&image, &at),
        Command::Keygen { out, force } => keygen(&out, force),
    }
}

/// Parses a size given in decimal or 0x hex.
pub fn parse_size(text: &str) -> Result<usize> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => text.parse(),
    };
    let size = parsed
        .with_context(|| format!("size `{text}` is not a number (use e.g. 0x6000 or 24576)"))?;
    if size == 0 || size % 4096 != 0 {
        bail!("size {text} is not a non-zero multiple of 4096 bytes (0x1000)");
    }
    Ok(size)
}

fn generate(args: GenerateArgs) -> Result<ExitCode> {
    let size = parse_size(&args.size)?;
    let name = args.csv.display().to_string();
    let text =
        std::fs::read_to_string(&args.csv).with_context(|| format!("cannot read CSV {name}"))?;
    let rows = csv::parse(&text, &name)?;
    let keys = match (args.encrypt, args.keygen, &args.inputkey) {
        (false, _, _) => None,
        (true, true, _) => Some(NvsKeys::generate(&mut rand::rngs::OsRng)),
        (true, false, Some(path)) => Some(crate::image_file::load_keys(path)?),
        (true, false, None) => {
            bail!("--encrypt needs --keygen --keyfile K.bin, or --inputkey K.bin")
        }
    };
    let version = if args.version == "1" {
        format::VERSION_1
    } else {
        format::VERSION_2
    };
    let mut builder = ImageBuilder::with_version(size, keys.as_ref(), version)?;
    csv::build(&rows, &name, &mut builder)?;
    let image = builder.finish();
    if args.keygen {
        let keyfile = args
            .keyfile
            .as_deref()
            .context("--keygen needs --keyfile K.bin to say where the new keys go")?;
        if keyfile.exists() {
            bail!(
                "{} exists; refusing to overwrite keys (pick another --keyfile)",
                keyfile.display()
            );
        }
        if let Some(keys) = &keys {
            write_atomically(keyfile, &keys.to_partition())?;
        }
    }
    write_atomically(&args.out, &image)?;
    eprintln!(
        "wrote {} ({} bytes, {} rows)",
        args.out.display(),
        image.len(),
        rows.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn dump(image: &Path, keys: Option<&Path>, as_json: bool, show_secrets: bool) -> Result<ExitCode> {
    let keys = maybe_keys(keys)?;
    let mut nvs = open(load_image(image)?, keys.as_ref(), Mode::ReadOnly, image)?;
    let mut listed = Vec::new();
    for entry in nvs.entries() {
        let Some(ns) = nvs.find_namespace(&entry.namespace) else {
            continue;
        };
        let value = render::read(&mut nvs, ns, &entry.key, entry.info)?;
        listed.push((entry, value));
    }
    if as_json {
        let values: Vec<_> = listed
            .iter()
            .map(|(e, v)| {
                json!({
                    "namespace": e.namespace,
                    "key": e.key,
                    "type": e.info.value_type.name(),
                    "size": e.info.len,
                    "value": render::json(&e.key, v, show_secrets),
                })
            })
            .collect();
        let stats = nvs.stats();
        let mut out = json!({
            "encrypted": nvs.is_encrypted(),
            "entries": values,
            "stats": {
                "pages": stats.pages,
                "used_entries": stats.used_entries,
                "free_entries": stats.free_entries,
                "total_entries": stats.total_entries,
                "namespaces": stats.namespaces,
            },
            "problems": nvs.mount_findings().iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        });
        if let Some(queue) = queue::summarize(&listed) {
            out["pressQueue"] = queue.json();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{:<15} {:<15} {:<6} {:>6}  VALUE",
            "NAMESPACE", "KEY", "TYPE", "SIZE"
        );
        for (e, v) in &listed {
            println!(
                "{:<15} {:<15} {:<6} {:>6}  {}",
                e.namespace,
                e.key,
                e.info.value_type.name(),
                e.info.len,
                render::text(&e.key, v, show_secrets, Some(72))
            );
        }
        let stats = nvs.stats();
        println!(
            "{} values in {} namespaces; entries used {} / free {} / total {} ({} pages)",
            listed.len(),
            stats.namespaces,
            stats.used_entries,
            stats.free_entries,
            stats.total_entries,
            stats.pages
        );
        for problem in nvs.mount_findings() {
            println!("problem: {problem}");
        }
        for line in queue::summarize(&listed).iter().flat_map(|q| q.text()) {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(image: &Path, keys: Option<&Path>, as_json: bool) -> Result<ExitCode> {
    let keys = maybe_keys(keys)?;
    let bytes = load_image(image)?;
    let size = bytes.len() as u32;
    let (problems, stats) = acorn_nvs::Nvs::check(
        acorn_nvs::MemFlash::from_bytes(bytes),
        0,
        size,
        keys.as_ref(),
    )
    .with_context(|| format!("cannot read {}", image.display()))?;
    let clean = problems.is_empty();
    if as_json {
        let out = json!({
            "clean": clean,
            "problems": problems.iter().map(|p| json!({
                "page": p.page, "entry": p.entry, "key": p.key, "problem": p.kind.describe(),
            })).collect::<Vec<_>>(),
            "pages": stats.pages, "pages_corrupt": stats.pages_corrupt,
            "used_entries": stats.used_entries, "free_entries": stats.free_entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for problem in &problems {
            println!("{}: {problem}", image.display());
        }
        println!(
            "{}: {} ({} pages, {} corrupt; {} entries used, {} free)",
            image.display(),
            if clean { "clean" } else { "PROBLEMS FOUND" },
            stats.pages,
            stats.pages_corrupt,
            stats.used_entries,
            stats.free_entries
        );
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn get(image: &Path, at: &KeyArgs, out: Option<&Path>, show_secrets: bool) -> Result<ExitCode> {
    let keys = maybe_keys(at.nvs_keys.as_deref())?;
    let mut nvs = open(load_image(image)?, keys.as_ref(), Mode::ReadOnly, image)?;
    let missing = || at.missing_in(image);
    let ns = nvs.find_namespace(&at.namespace).with_context(missing)?;
    let info = nvs.value_info(ns, &at.key)?.with_context(missing)?;
    let value = render::read(&mut nvs, ns, &at.key, info)?;
    match (&value, out) {
        (render::Shown::Bytes(b), Some(path)) => {
            if !show_secrets && is_secret(&at.key, b) {
                bail!(
                    "`{}` is a private key; add --show-secrets to write it out",
                    at.key
                );
            }
            write_atomically(path, b)?;
        }
        _ => println!("{}", render::text(&at.key, &value, show_secrets, None)),
    }
    Ok(ExitCode::SUCCESS)
}

fn set(
    image: &Path,
    at: &KeyArgs,
    value_type: &str,
    value: Option<&str>,
    file: Option<&Path>,
) -> Result<ExitCode> {
    let value_type = ValueType::from_name(value_type)
        .with_context(|| format!("unknown --type `{value_type}`; use u8, i8, u16, i16, u32, i32, u64, i64, string or blob"))?;
    let raw: Vec<u8> = match (value, file) {
        (_, Some(path)) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (Some(v), None) if value_type == ValueType::Blob => hex::decode(v.trim())
            .context("a blob value on the command line is hex digits; use --file for raw bytes")?,
        (Some(v), None) => v.as_bytes().to_vec(),
        (None, None) => bail!("give a value or --file"),
    };
    let keys = maybe_keys(at.nvs_keys.as_deref())?;
    let mut nvs = open_for_change(image, keys.as_ref())?;
    let ns = nvs.namespace(&at.namespace)?;
    match value_type {
        ValueType::Str => {
            let text = String::from_utf8(raw).context("a string value must be UTF-8")?;
            nvs.set_str(ns, &at.key, &text)?
        }
        ValueType::Blob => nvs.set_blob(ns, &at.key, &raw)?,
        t => {
            let text = String::from_utf8_lossy(&raw);
            let v = IntValue::parse(t, &text).with_context(|| {
                format!(
                    "`{}` is not a {} (a whole number in its range)",
                    text.trim(),
                    t.name()
                )
            })?;
            nvs.set_int(ns, &at.key, v)?
        }
    }
    write_atomically(image, nvs.release().bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn erase(image: &Path, at: &KeyArgs) -> Result<ExitCode> {
    let keys = maybe_keys(at.nvs_keys.as_deref())?;
    let mut nvs = open_for_change(image, keys.as_ref())?;
    let missing = || at.missing_in(image);
    let ns = nvs.find_namespace(&at.namespace).with_context(missing)?;
    if !nvs.erase(ns, &at.key)? {
        bail!(missing());
    }
    write_atomically(image, nvs.release().bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn keygen(out: &Path, force: bool) -> Result<ExitCode> {
    if out.exists() && !force {
        bail!(
            "{} exists; refusing to overwrite keys (add --force to replace them)",
            out.display()
        );
    }
    let keys = NvsKeys::generate(&mut rand::rngs::OsRng);
    write_atomically(out, &keys.to_partition())?;
    eprintln!("wrote NVS keys to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
