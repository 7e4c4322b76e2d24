//! Runs the registration backend alone until Ctrl-C, printing its URL, admin key and a first
//! registration token.
//!
//! ```text
//! cargo run -p acorn-backend --example backend -- [DATA_DIR] [LISTEN_ADDR]
//! ```
//! Defaults: `./acorn-backend-data` and `127.0.0.1:8080`.

use acorn_backend::{Backend, BackendConfig};
use secrecy::ExposeSecret as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "acorn-backend-data".into());
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let mut config = BackendConfig::new(dir);
    config.listen = listen.parse()?;
    let backend = Backend::start(config).await?;
    let token = backend.mint_token(3600).await?;
    println!("backend:    {}", backend.base_url());
    println!("admin key:  {}", backend.admin_key().expose_secret());
    println!(
        "token:      {} (expires in 1 h)",
        token.token.expose_secret()
    );
    println!("CA:         {}", backend.paths().ca_cert.display());
    println!("CRL:        {}", backend.paths().crl.display());
    tokio::signal::ctrl_c().await?;
    backend.shutdown().await?;
    Ok(())
}
