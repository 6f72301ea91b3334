//! Progress bars on stderr, hidden with `--quiet` or when stderr is not a terminal.
#![allow(dead_code)] // used as the subcommands land

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps with a message; hidden when `quiet`.
pub fn bar(len: u64, msg: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        pb.set_draw_target(ProgressDrawTarget::stderr());
    }
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:<14} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {wide_msg}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// A bar measuring bytes.
pub fn bytes_bar(len: u64, msg: &str, quiet: bool) -> ProgressBar {
    let pb = bar(len, msg, quiet);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:<14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    pb
}

/// A spinner for a step of unknown length; hidden when `quiet`.
pub fn spinner(msg: &str, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        pb.set_draw_target(ProgressDrawTarget::stderr());
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
    }
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("static template"),
    );
    pb.set_message(msg.to_string());
    pb
}
