//! Bearer-token verification: what one request pays with the verification
//! cache (a token seen before) and without it (a new token: decode, key
//! lookup, signature, claims), for ES384 and RS384.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use fhirbridge::auth::jwks::KeySource;
use fhirbridge::auth::jwt::{Alg, JwkSet, SigningKey};
use fhirbridge::auth::verify::{Authenticator, PatientDirectory};
use fhirbridge::auth::AuthSettings;
use fhirbridge::model::LogicalId;
use serde_json::json;

struct NoDirectory;

#[async_trait::async_trait(?Send)]
impl PatientDirectory for NoDirectory {
    async fn by_nhs_number(&self, _: &str) -> Result<Option<LogicalId>, String> {
        Ok(None)
    }
}

fn verification(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, key) in [
        ("ES384", SigningKey::generate_es384().expect("key")),
        ("RS384", SigningKey::generate_rsa(Alg::RS384).expect("key")),
    ] {
        let mut auth =
            Authenticator::new(&AuthSettings::default(), "https://bench.test/fhir".into());
        let set = JwkSet::parse(
            json!({"keys": [key.public_jwk().expect("jwk")]})
                .to_string()
                .as_bytes(),
        )
        .expect("jwks");
        auth.trust("https://iss.bench".into(), KeySource::fixed(Arc::new(set)));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let token = |n: u64| {
            let claims = json!({"iss": "https://iss.bench", "aud": "https://bench.test/fhir",
                "sub": format!("s{n}"), "iat": now, "exp": now + 3600, "scope": "system/*.rs"});
            format!("Bearer {}", key.sign(&claims, "JWT").expect("sign"))
        };
        let hot = token(0);
        c.bench_function(&format!("auth/{name}/cached"), |b| {
            b.iter(|| {
                rt.block_on(auth.authenticate(&[hot.as_bytes()], false, &NoDirectory))
                    .expect("ok")
            })
        });
        // Fresh tokens each time (signed outside the timing).
        let fresh: Vec<String> = (1..=2_000).map(token).collect();
        let mut i = 0;
        c.bench_function(&format!("auth/{name}/uncached"), |b| {
            b.iter(|| {
                i = (i + 1) % fresh.len();
                let t = &fresh[i];
                black_box(
                    rt.block_on(auth.authenticate(&[t.as_bytes()], false, &NoDirectory))
                        .expect("ok"),
                );
                auth.forget_all();
            })
        });
    }
}

criterion_group!(benches, verification);
criterion_main!(benches);
