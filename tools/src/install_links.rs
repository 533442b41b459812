//! `thinly install-links [DIR]`: the thin_* names (`thin_check`, `thin_dump`, …) as
//! symbolic links to this very binary, which dispatches on the name it was invoked under
//! (`main.rs`).
//!
//! Contract: a link is only ever made to the canonical, existing path of the running
//! executable, and each is checked after it is made (it must resolve to that file), so the
//! command can never leave an empty or dangling link. A link is replaced atomically
//! (made under a temporary name, then renamed over the old one). Anything at a link's name
//! that is not a symbolic link — a real thin-provisioning-tools binary, say — is left alone
//! unless `--force`; a refused name stops the command before any link is made.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::cli::Tool;

#[derive(Debug, clap::Args)]
pub struct InstallLinksArgs {
    /// Where to make the links [default: the directory holding this `thinly`].
    pub dir: Option<PathBuf>,
    /// Replace files at those names that are not symbolic links (e.g. the real
    /// thin-provisioning-tools).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &InstallLinksArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the running thinly executable")?;
    // canonicalize fails for a deleted or unreachable binary: no link to nothing.
    let exe = exe
        .canonicalize()
        .with_context(|| format!("resolving the running executable {}", exe.display()))?;
    ensure!(exe.is_file(), "{} is not a file", exe.display());
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => exe.parent().context("the executable has no directory")?.to_path_buf(),
    };
    ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let names: Vec<&str> = Tool::ALL.iter().map(|t| t.1).collect();
    for name in &names {
        refuse_non_link(&dir.join(name), args.force)?;
    }
    for name in &names {
        let link = dir.join(name);
        make_link(&exe, &link)?;
        println!("{} -> {}", link.display(), exe.display());
    }
    if !on_path(&dir) {
        eprintln!("thinly: note: {} is not on PATH", dir.display());
    }
    Ok(())
}

/// Fails when `link` exists and is not a symbolic link (unless `force`).
fn refuse_non_link(link: &Path, force: bool) -> Result<()> {
    match std::fs::symlink_metadata(link) {
        Ok(md) if !md.file_type().is_symlink() && !force => bail!(
            "{} exists and is not a symbolic link (is thin-provisioning-tools installed \
             there?); nothing changed; use --force to replace it",
            link.display()
        ),
        Ok(md) if md.is_dir() => bail!("{} is a directory; nothing changed", link.display()),
        _ => Ok(()),
    }
}

/// Points `link` at `exe` atomically, then proves the link resolves to `exe`.
fn make_link(exe: &Path, link: &Path) -> Result<()> {
    let file_name = link.file_name().and_then(|n| n.to_str()).context("bad link name")?;
    let tmp = link.with_file_name(format!(".{file_name}.thinly-tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(exe, &tmp)
        .with_context(|| format!("creating the link {}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("installing the link {}", link.display()));
    }
    let target = link
        .canonicalize()
        .with_context(|| format!("{} does not resolve after linking", link.display()))?;
    ensure!(
        target == exe,
        "{} resolves to {}, not {}",
        link.display(),
        target.display(),
        exe.display()
    );
    Ok(())
}

fn on_path(dir: &Path) -> bool {
    let Some(path) = std::env::var_os("PATH") else { return false };
    let want = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    std::env::split_paths(&path).any(|p| p.canonicalize().is_ok_and(|p| p == want))
}
