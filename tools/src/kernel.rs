//! `thinly kernel-script POOL`: prints the commands that activate a thinly pool under the
//! Linux kernel's dm-thin (losetup for the two files, a thin-pool table, a thin table per
//! volume), for a person on a machine with device-mapper. `--guest` prints the form the
//! kernel lab's guest sources (disks found by serial). The tables come from
//! `thinly_engine::kernel::activate`, which the kernel tests use too.

use anyhow::{Context, Result};
use std::path::PathBuf;
use thinly_engine::kernel::activate::{Activation, ActivationOptions, DATA_FILE, METADATA_FILE};

#[derive(Debug, clap::Args)]
pub struct KernelScriptArgs {
    /// The pool directory (metadata, data, pool.json).
    pub pool: PathBuf,
    /// The pool device's name [default: the directory's base name].
    #[arg(long)]
    pub name: Option<String>,
    /// Put this before every thin device's name.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Print the kernel lab guest's form (a file to source; disks found by serial).
    #[arg(long)]
    pub guest: bool,
}

pub fn run(a: &KernelScriptArgs) -> Result<()> {
    let opts = ActivationOptions { pool_name: a.name.clone(), thin_prefix: a.prefix.clone() };
    let act = Activation::from_pool_dir(&a.pool, &opts)
        .with_context(|| format!("reading the pool in {}", a.pool.display()))?;
    let text = if a.guest {
        act.guest_script(METADATA_FILE, DATA_FILE)
    } else {
        let dir = std::fs::canonicalize(&a.pool).unwrap_or_else(|_| a.pool.clone());
        // The devices pool.json names (a pool on block devices), else the two files.
        let paths = thinly_engine::pool::DevicePaths::of_pool(&dir)
            .with_context(|| format!("reading pool.json in {}", dir.display()))?;
        act.host_script(&paths.metadata, &paths.data)
    };
    print!("{text}");
    Ok(())
}
