//! The storage seam: a backend that declares only some types and interactions
//! (as a supplier adapter will) gets exactly those served and advertised.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use fhirbridge::config::Settings;
use fhirbridge::model::ResourceType;
use fhirbridge::storage::*;

use crate::helpers::{patient, TestApp};

/// Read-only view of a real backend, for Patient only.
struct ReadOnlyPatients {
    inner: Arc<dyn Backend>,
    caps: Capabilities,
}

#[async_trait]
impl Backend for ReadOnlyPatients {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn reader(&self) -> Option<&dyn ResourceRead> {
        self.inner.reader()
    }
    fn writer(&self) -> Option<&dyn ResourceWrite> {
        None
    }
    fn history(&self) -> Option<&dyn History> {
        None
    }
    fn search(&self) -> Option<&dyn Search> {
        self.inner.search()
    }
    async fn ping(&self) -> StorageResult<()> {
        self.inner.ping().await
    }
    fn pool_state(&self) -> (u32, u32) {
        self.inner.pool_state()
    }
}

#[actix_rt::test]
async fn partial_backend_is_served_and_advertised_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_testing();
    settings.storage.database_url = format!("sqlite://{}", dir.path().join("seam.db").display());
    let inner = fhirbridge::open_backend(&settings).unwrap();
    // Seed one Patient through the full backend.
    let full = TestApp::start(settings.clone(), "sqlite", None, None);
    let p = full.create(&patient("9000000270", "Seam")).await;
    let id = p["id"].as_str().unwrap();

    let caps = Capabilities {
        backend: "read-only-test",
        types: vec![(
            ResourceType::Patient,
            [Interaction::Read, Interaction::SearchType]
                .into_iter()
                .collect::<BTreeSet<_>>(),
        )],
        system_history: false,
        conditional_create: false,
        update_create: false,
        search_params: SearchParams::Only(
            [(
                ResourceType::Patient,
                ["_id", "identifier"]
                    .map(String::from)
                    .into_iter()
                    .collect(),
            )]
            .into_iter()
            .collect(),
        ),
    };
    let backend: Arc<dyn Backend> = Arc::new(ReadOnlyPatients { inner, caps });
    // This backend keeps no audit trail: the server refuses to start with
    // audit on (fail closed), so the test turns it off.
    settings.audit.enabled = false;
    let app = fhirbridge::Application::build_with_backend(settings, backend).unwrap();
    let port = app.port();
    actix_rt::spawn(app.run_until_stopped());
    let ro = TestApp::attach(port);

    let cs = ro.get("/fhir/metadata").await.json();
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources[0]["type"], "Patient");
    let codes: Vec<&str> = resources[0]["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec!["read", "search-type"]);
    assert!(
        cs["rest"][0].get("interaction").is_none(),
        "no system history advertised"
    );

    assert_eq!(ro.get(&format!("/fhir/Patient/{id}")).await.status, 200);
    assert_eq!(
        ro.get(&format!("/fhir/Patient?_id={id}")).await.json()["total"],
        1
    );
    assert_eq!(
        ro.post("/fhir/Patient", &patient("9000000289", "No"))
            .await
            .status,
        405
    );
    assert_eq!(ro.delete(&format!("/fhir/Patient/{id}")).await.status, 405);
    assert_eq!(
        ro.get(&format!("/fhir/Patient/{id}/_history")).await.status,
        405
    );
    assert_eq!(ro.get("/fhir/_history").await.status, 405);
    assert_eq!(ro.get("/fhir/Slot/1").await.status, 404);

    // Search parameters: exactly what the backend declares, advertised and served.
    let mut params: Vec<&str> = resources[0]["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    params.sort();
    assert_eq!(params, vec!["_id", "identifier"]);
    let r = ro.get("/fhir/Patient?family=Seam").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not supported"), "{}", r.text());
    assert_eq!(
        ro.get("/fhir/Patient?identifier=9000000270").await.status,
        200
    );

    // No Transactions capability: bundles get a clear 501 (and none is advertised).
    for kind in ["batch", "transaction"] {
        let b = serde_json::json!({"resourceType": "Bundle", "type": kind, "entry": [
            {"request": {"method": "GET", "url": format!("Patient/{id}")}}]});
        assert_eq!(ro.post("/fhir", &b).await.status, 501, "{kind}");
    }
    let system: Vec<&str> = cs["rest"][0]["interaction"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(!system.contains(&"transaction") && !system.contains(&"batch"));
}
