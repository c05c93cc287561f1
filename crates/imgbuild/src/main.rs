//! eve-imgbuild CLI.
fn main() {}
