//! Locating and installing the FHIR R4 core package (`hl7.fhir.r4.examples`
//! 4.0.1) in the local FHIR package cache (`~/.fhir/packages`).
//!
//! Installation (`npm pack` + `tar`) is the only network use of this crate
//! and is never triggered by validation.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the core package.
pub const CORE_PACKAGE: &str = "hl7.fhir.r4.examples";
/// Version of the core package.
pub const CORE_VERSION: &str = "4.0.1";

/// `$FHIR_PACKAGE_CACHE`, else `~/.fhir/packages`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FHIR_PACKAGE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".fhir").join("packages")
}

fn core_dir(cache_dir: &Path) -> PathBuf {
    cache_dir
        .join(format!("{CORE_PACKAGE}#{CORE_VERSION}"))
        .join("package")
}

/// `<cache>/hl7.fhir.r4.examples#4.0.1/package` if installed (`package.json` present).
pub fn locate_core(cache_dir: &Path) -> Option<PathBuf> {
    let dir = core_dir(cache_dir);
    dir.join("package.json").is_file().then_some(dir)
}

/// Installs `hl7.fhir.r4.examples@4.0.1` into the cache with `npm pack` (from
/// the npm registry npm is configured for) and `tar`, then writes the registry
/// index. Returns the package directory.
/// Does nothing (but writing a missing index) when already installed.
pub fn install_core(cache_dir: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = locate_core(cache_dir) {
        crate::registry::ensure_index(&dir)?;
        return Ok(dir);
    }
    let target = cache_dir.join(format!("{CORE_PACKAGE}#{CORE_VERSION}"));
    std::fs::create_dir_all(&target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let tmp = cache_dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let result = (|| {
        let out = Command::new("npm")
            .arg("pack")
            .arg(format!("{CORE_PACKAGE}@{CORE_VERSION}"))
            .arg("--pack-destination")
            .arg(&tmp)
            .output()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm pack failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let tgz = std::fs::read_dir(&tmp)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .ok_or("npm pack produced no .tgz")?;
        let out = Command::new("tar")
            .arg("xzf")
            .arg(&tgz)
            .arg("-C")
            .arg(&target)
            .output()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tar failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    let dir = locate_core(cache_dir)
        .ok_or_else(|| format!("{} has no package/package.json", target.display()))?;
    crate::registry::ensure_index(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_missing() {
        assert!(locate_core(Path::new("/nonexistent/cache")).is_none());
    }
}
