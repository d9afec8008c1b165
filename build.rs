//! Extracts the README's ```rust blocks for the doc tests (`cargo test --doc`
//! compiles them; `src/lib.rs` includes the result under `cfg(doctest)`). The
//! README's other blocks (shell, text) are left out: rustdoc would read an
//! unlabelled one as Rust.

use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-changed=README.md");
    let readme = fs::read_to_string("README.md").unwrap_or_default();
    let mut out = String::new();
    let mut in_rust = false;
    for line in readme.lines() {
        let fence = line.trim_start().starts_with("```");
        if !in_rust && fence && line.trim_start()[3..].trim().starts_with("rust") {
            in_rust = true;
        } else if in_rust && fence {
            in_rust = false;
            out.push_str(line);
            out.push_str("\n\n");
            continue;
        }
        if in_rust {
            out.push_str(line);
            out.push('\n');
        }
    }
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("readme_rust.md");
    fs::write(dest, out).expect("OUT_DIR is writable");
}
