//! Where the cluster tests find the `interop` example binary.

use std::path::PathBuf;

/// `RSIO_INTEROP_BIN`, or `target/<profile>/examples/interop` beside the test
/// binary (tests run from `target/<profile>/deps/<test>-<hash>`); panics with
/// the command that builds it when it is missing.
pub fn interop_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RSIO_INTEROP_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .join("examples")
        .join("interop");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --example interop`",
        bin.display()
    );
    bin
}
