//! Finding etcd, and installing Debian's etcd-server (etcd 3.4) when it is
//! missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Bound on one apt-get command (an index update or the install).
const APT_TIMEOUT_SECONDS: u64 = 300;
/// Debian's package with the etcd server.
const ETCD_PACKAGE: &str = "etcd-server";

/// The etcd to run and its version line, installing it if needed; an
/// error says why there is none.
pub async fn find_or_install_etcd(explicit: Option<&Path>) -> Result<(PathBuf, String)> {
    if let Some(path) = explicit {
        let version = version(path).await?;
        return Ok((path.to_path_buf(), version));
    }
    if let Some(path) = on_path("etcd") {
        let version = version(&path).await?;
        return Ok((path, version));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("etcd is not installed and installing it needs root: apt-get install {ETCD_PACKAGE}");
    }
    if apt(&["install", "-y", "-qq", ETCD_PACKAGE]).await.is_err() {
        // A machine that never fetched the index knows no etcd-server yet.
        apt(&["update", "-qq"]).await?;
        apt(&["install", "-y", "-qq", ETCD_PACKAGE]).await?;
    }
    let path = on_path("etcd").context("apt-get installed etcd-server but no etcd is on PATH")?;
    let version = version(&path).await?;
    Ok((path, version))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

async fn apt(args: &[&str]) -> Result<()> {
    let mut command = tokio::process::Command::new("apt-get");
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(APT_TIMEOUT_SECONDS), command.output())
        .await
        .with_context(|| {
            format!(
                "apt-get {} took over {APT_TIMEOUT_SECONDS} s",
                args.join(" ")
            )
        })?
        .context("running apt-get")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "apt-get {} failed ({}): {}",
            args.join(" "),
            output.status,
            stderr.trim()
        );
    }
    Ok(())
}

/// `etcd --version`'s first line, e.g. "etcd Version: 3.4.23".
async fn version(path: &Path) -> Result<String> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(path)
            .arg("--version")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{} --version hung", path.display()))?
    .with_context(|| format!("running {} --version", path.display()))?;
    if !output.status.success() {
        bail!("{} --version failed ({})", path.display(), output.status);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("unknown version")
        .trim()
        .to_string())
}
