//! Embeds the UK Core definitions (`profiles/ukcore/*.json`) in the binary, so
//! the server validates against UK Core wherever it is started from
//! (`src/validation.rs`: `EMBEDDED_PROFILES`).

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&manifest).join("profiles").join("ukcore");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = String::from(
        "/// The UK Core definitions in `profiles/ukcore`: (file name, JSON text).\n\
         pub static EMBEDDED_PROFILES: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let _ = writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            f.display().to_string()
        );
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    std::fs::write(Path::new(&out_dir).join("ukcore_profiles.rs"), out)
        .unwrap_or_else(|e| panic!("cannot write the embedded profile list: {e}"));
}
