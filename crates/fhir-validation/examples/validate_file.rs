//! Debugging aid: `cargo run -p fhir-validation --example validate_file -- <core dir> <instance> [profile url] [definition files…]`
//! validates one instance and prints the issues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

fn load(f: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(f).unwrap();
    if f.ends_with(".xml") {
        fhir_validation::xml_to_json(&text).unwrap()
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(core), Some(instance)) = (args.first(), args.get(1)) else {
        eprintln!("usage: validate_file <core dir> <instance> [profile url] [definition files…]");
        return;
    };
    let mut b = fhir_validation::Registry::from_core_package(std::path::Path::new(core)).unwrap();
    for f in args.iter().skip(3) {
        let p = std::path::Path::new(f);
        if p.is_dir() {
            b.add_dir(p).unwrap();
        } else {
            let _ = b.add_resource(load(f));
        }
    }
    let reg = std::sync::Arc::new(b.build().unwrap());
    let v = fhir_validation::Validator::new(reg, fhir_validation::ValidatorOptions::default());
    let profiles: Vec<&str> = args
        .get(2)
        .map(String::as_str)
        .filter(|p| !p.is_empty())
        .into_iter()
        .collect();
    let r = v.validate(&load(instance), &profiles);
    for i in &r.issues {
        println!("{i}");
    }
    println!("valid: {}", r.is_valid());
}
