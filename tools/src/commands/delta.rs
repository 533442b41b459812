//! `thin_delta`: XML describing how two devices' mappings differ.

use anyhow::{Context, Result};
use thinly_engine::fsck::delta::delta;

use crate::cli::DeltaArgs;
use crate::exit;
use crate::files::{open_input, output};

pub fn run(a: &DeltaArgs) -> Result<u8> {
    let dev = open_input(&a.input, false)?;
    let mut out = output(None)?;
    delta(dev, a.metadata_snap, a.snap1, a.snap2, a.verbose, &mut out).with_context(|| {
        format!("comparing devices {} and {} of {}", a.snap1, a.snap2, a.input.display())
    })?;
    Ok(exit::SUCCESS)
}
