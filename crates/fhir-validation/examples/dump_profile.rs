//! Debugging aid: `cargo run -p fhir-validation --example dump_profile -- <core dir> <profile url> [files…]`
//! prints the snapshot of a profile after loading the given files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(core), Some(url)) = (args.first(), args.get(1)) else {
        eprintln!("usage: dump_profile <core dir> <profile url> [files…]");
        return;
    };
    let mut b = fhir_validation::Registry::from_core_package(std::path::Path::new(core)).unwrap();
    for f in args.iter().skip(2) {
        let text = std::fs::read_to_string(f).unwrap();
        let v = if f.ends_with(".xml") {
            fhir_validation::xml_to_json(&text).unwrap()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        let _ = b.add_resource(v);
    }
    let reg = b.build().unwrap();
    match reg.profile(url) {
        Some(p) => {
            for w in &p.warnings {
                println!("warning: {w}");
            }
            print!("{}", p.debug_dump());
        }
        None => println!("not found"),
    }
}
