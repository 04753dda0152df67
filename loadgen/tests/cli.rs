//! The command line refuses impossible runs before touching any broker.
//! (The runs themselves are tested against real nodes in the broker's
//! suite, `tests/it/loadgen.rs`, which needs this crate's binary built:
//! this test is what makes `cargo test --workspace` build it.)

use std::process::Command;

/// Runs the binary with `args` against a port nothing listens on; returns
/// (exit success, stderr).
fn run(args: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_claudemesh-loadgen"))
        .args(["--url", "http://127.0.0.1:9", "--admin-token", "t"])
        .args(args.split_whitespace())
        .env_remove("BROKER_ADMIN_TOKEN")
        .output()
        .expect("the load generator runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn impossible_runs_are_refused_with_the_flag_named() {
    for (args, flag) in [
        ("--workload dm --peers 0", "--peers"),
        ("--workload rate --peers 4", "--rate"),
        ("--workload dm --peers 4 --cross-node", "--cross-node"),
        ("--workload idle --peers 4 --stalled 1", "--stalled"),
    ] {
        let (ok, stderr) = run(args);
        assert!(!ok, "`{args}` must fail");
        assert!(stderr.contains(flag), "`{args}`: {stderr}");
    }
}
