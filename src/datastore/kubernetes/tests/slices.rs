//! The EndpointSlice watch (for `services` rule matches) against the mock
//! API server: slices listed, changed and deleted as per-object updates;
//! an API server that does not serve discovery.k8s.io/v1 (404) or RBAC
//! that does not grant it (403) leaves the other kinds working, is noted
//! once, and is listed again only on the re-check timer (no error loop).

use super::*;

const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

fn slice(name: &str, addrs: &[&str]) -> serde_json::Value {
    let endpoints: Vec<serde_json::Value> = addrs
        .iter()
        .map(|a| {
            json!({"addresses": [a], "conditions": {"ready": true}, "nodeName": "node2",
                        "targetRef": {"kind": "Pod", "name": "api-0", "namespace": "shop"}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": "shop", "generateName": "api-",
                        "labels": {"kubernetes.io/service-name": "api",
                                   "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "api", "uid": "u"}]},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

/// The addresses of the slices the consumer holds, by slice name.
fn slices_of(c: &Consumer) -> BTreeMap<String, Vec<String>> {
    c.objects
        .values()
        .filter_map(|r| match r {
            Resource::EndpointSlice(o) => Some((
                o.metadata.name.clone().unwrap_or_default(),
                o.spec
                    .endpoints
                    .iter()
                    .flat_map(|e| e.addresses.clone())
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn wait_slices(rig: &Rig, want: &[(&str, &[&str])], bound: Duration) -> bool {
    let want: BTreeMap<String, Vec<String>> = want
        .iter()
        .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
        .collect();
    let start = Instant::now();
    let mut c = rig.c.borrow_mut();
    while start.elapsed() < bound {
        c.pump(Duration::from_millis(10));
        if c.synced > 0 && slices_of(&c) == want {
            return true;
        }
    }
    false
}

#[test]
fn endpoint_slices_are_listed_watched_and_deleted() {
    let rig = Rig::start(Tuning::new(), &[SLICES]);
    rig.api.put(SLICES, slice("api-1", &["198.18.3.10"]));
    assert!(
        wait_slices(
            &rig,
            &[("api-1", &["198.18.3.10"])],
            Duration::from_secs(10)
        ),
        "the listed slice arrives, fields tortie does not read ignored"
    );
    let got = rig.c.borrow().objects.values().find_map(|r| match r {
        Resource::EndpointSlice(o) => Some(o.clone()),
        _ => None,
    });
    let o = got.expect("a slice");
    assert_eq!(o.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(
        crate::model::validate::slice_members(&o.spec),
        (vec!["198.18.3.10".parse().unwrap()], vec![(6, 8080)])
    );
    rig.api
        .put(SLICES, slice("api-1", &["198.18.3.10", "198.18.3.11"]));
    rig.api.put(SLICES, slice("api-2", &["198.18.3.12"]));
    assert!(
        wait_slices(
            &rig,
            &[
                ("api-1", &["198.18.3.10", "198.18.3.11"]),
                ("api-2", &["198.18.3.12"])
            ],
            Duration::from_secs(5)
        ),
        "an endpoint added, a slice added"
    );
    rig.api.delete(SLICES, &slice("api-1", &[]));
    assert!(
        wait_slices(&rig, &[("api-2", &["198.18.3.12"])], Duration::from_secs(5)),
        "a slice deleted"
    );
    let notes = &rig.c.borrow().notes;
    assert!(
        !notes.iter().any(|n| n.starts_with(ENDPOINT_SLICE_LABEL)),
        "{notes:#?}"
    );
}

/// Notes about EndpointSlices received within `wait`, and whether the
/// pods (another kind) arrived meanwhile.
fn slice_notes(rig: &Rig, wait: Duration) -> (Vec<String>, bool) {
    let mut notes = Vec::new();
    let pods = rig
        .wait_pods(&[("a", "x")], Duration::from_secs(10), &mut notes)
        .is_some();
    let until = Instant::now() + wait;
    while Instant::now() < until {
        let mut c = rig.c.borrow_mut();
        c.pump(Duration::from_millis(20));
        notes.append(&mut c.notes);
    }
    notes.retain(|n| n.starts_with(ENDPOINT_SLICE_LABEL));
    (notes, pods)
}

#[test]
fn endpoint_slices_not_served_are_taken_as_empty_and_noted_once() {
    let rig = Rig::start(Tuning::new(), &[]);
    let start = Instant::now();
    let (notes, pods) = slice_notes(&rig, Duration::from_secs(2));
    assert!(pods, "the other kinds sync without EndpointSlices");
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        notes[0].contains("not served") && notes[0].contains("discovery.k8s.io/v1"),
        "{notes:#?}"
    );
    let lists = rig.api.count(SLICES, false, start);
    assert!(lists <= 1, "{lists} LISTs: the 5-minute re-check waits");
}

#[test]
fn forbidden_endpoint_slices_are_noted_once_and_rechecked_on_the_timer() {
    let mut tuning = Tuning::new();
    tuning.recheck_absent = Duration::from_secs(1);
    let rig = Rig::start(tuning, &[SLICES]);
    rig.api.fail_with(SLICES, 403);
    let start = Instant::now();
    let (notes, pods) = slice_notes(&rig, Duration::from_millis(3500));
    assert!(
        pods,
        "the other kinds sync while EndpointSlices are forbidden"
    );
    assert_eq!(notes.len(), 1, "noted once, not per retry: {notes:#?}");
    assert!(
        notes[0].contains("403 Forbidden")
            && notes[0].contains("endpointslices.discovery.k8s.io")
            && notes[0].contains("manifests/rbac.yaml"),
        "{notes:#?}"
    );
    // No error loop: one LIST per re-check, not a retry per backoff step.
    let lists = rig.api.count(SLICES, false, start);
    assert!(
        (2..=6).contains(&lists),
        "{lists} LISTs in ~4 s with a 1 s re-check"
    );
    // RBAC granted: the next re-check lists the slices.
    rig.api.stop_failing(SLICES);
    rig.api.put(SLICES, slice("api-1", &["198.18.3.10"]));
    assert!(
        wait_slices(&rig, &[("api-1", &["198.18.3.10"])], Duration::from_secs(3)),
        "picked up by the timer once granted"
    );
}
