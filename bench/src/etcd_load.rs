//! `etcd-load`: drives any etcd v3 server (etcd, `chorus serve`) with one
//! workload and prints JSON lines (see `chorus_bench::load`).
//!
//! ```text
//! etcd-load --endpoints http://127.0.0.1:2379 --clients 64 --duration 10 --workload put
//! etcd-load --endpoints http://127.0.0.1:2379 --clients 16 --workload get --preload
//! etcd-load --endpoints http://127.0.0.1:2379 --clients 1000 --workload watch --rate 100
//! ```

use chorus_bench::load::{main_with, LoadArgs};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "etcd v3 load generator: the same client code for etcd and chorus")]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

fn main() -> anyhow::Result<()> {
    main_with(Cli::parse().load)
}
