//! Runs the C test suite (`scripts/c-tests`) against the static and shared libraries cargo
//! built for this test run, so `cargo test --workspace` covers the C ABI from C, under
//! valgrind too.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn c_tests_pass_static_shared_and_under_valgrind() {
    // Integration tests live in target/<profile>/deps, next to the cdylib and staticlib cargo
    // built from this crate for them.
    let exe = std::env::current_exe().expect("path of the test binary");
    let lib_dir = exe
        .parent()
        .expect("the test binary's directory")
        .to_path_buf();
    assert!(
        lib_dir.join("liboverlay_ffi.a").exists() && lib_dir.join("liboverlay_ffi.so").exists(),
        "liboverlay_ffi.a and .so not found in {}",
        lib_dir.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/c-tests");
    let status = Command::new(&script)
        .arg("--lib-dir")
        .arg(&lib_dir)
        // cargo counts this test as passed or failed, never skipped: a C test that cannot run
        // (not root, no gcc or valgrind) must fail it, as it does under CI.
        .env("CI", "true")
        .status()
        .expect("run scripts/c-tests (needs bash)");
    assert!(
        status.success(),
        "{} failed; see its output above",
        script.display()
    );
}
