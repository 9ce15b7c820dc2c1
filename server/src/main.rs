//! `csp-server`: see `csp-server --help`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = csp_server::config::Args::parse();
    csp_server::run(args)
}
