//! `thin_delta`: XML describing how two devices' mappings differ.

use anyhow::{Context, Result};
use thinly_engine::fsck::delta::{delta, Side};

use super::live;
use crate::cli::DeltaArgs;
use crate::exit;
use crate::files::{open_input, output};

pub fn run(a: &DeltaArgs) -> Result<u8> {
    live::may_read("thin_delta", &a.input, a.force, a.metadata_snap.is_some())?;
    let dev = open_input(&a.input, false)?;
    let mut out = output(None)?;
    // clap's groups guarantee one of each pair.
    let side = |id: Option<u64>, root: Option<u64>| match (id, root) {
        (Some(id), _) => Side::DevId(id),
        (None, r) => Side::Root(r.unwrap_or(0)),
    };
    let (left, right) = (side(a.snap1, a.root1), side(a.snap2, a.root2));
    delta(dev, a.metadata_snap, left, right, a.verbose, &mut out)
        .with_context(|| format!("comparing {left:?} and {right:?} of {}", a.input.display()))?;
    Ok(exit::SUCCESS)
}
