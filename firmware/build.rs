//! Links esp-hal's linker scripts (`linkall.x` must come last).
fn main() {
    println!("cargo:rustc-link-arg=-Tlinkall.x");
}
