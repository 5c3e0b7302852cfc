//! `POST [type]/_search` keeps its parameters out of URLs: every page link is an
//! opaque token whose parameters are stored server-side (issue 11, item 2).

use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{nhs_number, patient, TestApp};

backend_tests!(post_search_page_links_carry_no_parameter_values);

fn links(b: &Value) -> Vec<(String, String)> {
    b["link"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["relation"].as_str().unwrap().to_owned(),
                l["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn path_of(url: &str) -> String {
    format!("/fhir/{}", url.split_once("/fhir/").unwrap().1)
}

async fn post_search_page_links_carry_no_parameter_values(app: TestApp) {
    let numbers: Vec<String> = (0..3).map(|i| nhs_number(800 + i)).collect();
    for n in &numbers {
        app.create(&patient(n, "Tokenised")).await;
    }
    let ids = numbers
        .iter()
        .map(|n| format!("https://fhir.nhs.uk/Id/nhs-number|{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let form =
        serde_urlencoded::to_string([("identifier", ids.as_str()), ("_count", "1")]).unwrap();
    let r = app
        .request(
            "POST",
            "/fhir/Patient/_search",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(form.into_bytes()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut page = r.json();
    let mut seen = Vec::new();
    for _ in 0..3 {
        assert_eq!(page["total"], 3, "{page}");
        for (rel, url) in links(&page) {
            assert!(
                !numbers.iter().any(|n| url.contains(n.as_str()))
                    && !url.contains("identifier")
                    && !url.contains("nhs-number"),
                "{rel} link leaks the search: {url}"
            );
            assert!(url.contains("/fhir/Patient?_page="), "{url}");
        }
        seen.push(
            page["entry"][0]["resource"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let next = links(&page).into_iter().find(|(rel, _)| rel == "next");
        let Some((_, url)) = next else { break };
        let r = app.get(&path_of(&url)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        page = r.json();
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "three pages, three different Patients");
    // the self link repeats the page it names
    let (_, self_url) = links(&page).into_iter().find(|(r, _)| r == "self").unwrap();
    let again = app.get(&path_of(&self_url)).await.json();
    assert_eq!(
        again["entry"][0]["resource"]["id"],
        page["entry"][0]["resource"]["id"]
    );

    // unknown tokens are gone; a token is bound to its type and takes no other parameters
    let r = app.get("/fhir/Patient?_page=0123456789abcdef").await;
    assert_eq!(r.status, 410, "{}", r.text());
    let token = self_url.split("_page=").nth(1).unwrap().to_owned();
    let r = app.get(&format!("/fhir/Observation?_page={token}")).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = app
        .get(&format!("/fhir/Patient?_page={token}&family=x"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // GET searches keep their readable links
    let b = app
        .get("/fhir/Patient?family=tokenised&_count=1")
        .await
        .json();
    assert!(
        links(&b)
            .iter()
            .all(|(_, u)| u.contains("family=tokenised")),
        "{b}"
    );
}
