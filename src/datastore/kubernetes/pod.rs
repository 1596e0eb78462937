//! Pods as the source decodes them: only what tortie reads of a Pod (name,
//! namespace, uid, resourceVersion, labels, annotations; node, service
//! account, host network, container ports; addresses and phase), straight
//! from the API's JSON. The rest of a Pod (volumes, env, probes, status
//! conditions, managedFields) is skipped by the parser, never built.
//!
//! Why not k8s-openapi's `Pod`: its value is several kilobytes of struct
//! that the watcher moves through its list pages, events and queues, and
//! every skipped field of it would still be allocated. At 250,000 pods
//! that decoding took most of the listing's CPU on both cores.
//!
//! Why not the model's own `PodSpec`/`PodStatus` (which derive
//! `Deserialize` for the loader): they refuse an explicit `null` list
//! (k8s-openapi accepted one, so the source did), and the
//! conversion (`convert`) gives each list an allocation of its exact size.
//! Missing optional fields are `None`, as serde makes them.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

/// A Pod, slim: see the module doc. Decodes from a Pod's JSON.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub node_name: Option<String>,
    pub service_account_name: Option<String>,
    pub host_network: Option<bool>,
    pub containers: Option<Vec<Container>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Container {
    pub ports: Option<Vec<ContainerPort>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i32,
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
    pub phase: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PodIp {
    pub ip: String,
}

/// The metadata fields kept (the watcher needs the resourceVersion; the
/// model the rest).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

fn slim_meta<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Option::<SlimMeta>::deserialize(d)?;
    Ok(m.map(|m| ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m.annotations,
        ..ObjectMeta::default()
    })
    .unwrap_or_default())
}

impl kube::Resource for Pod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn addresses_the_api_as_a_pod_does() {
        type Full = k8s_openapi::api::core::v1::Pod;
        for ns in [None, Some("shop")] {
            assert_eq!(Pod::url_path(&(), ns), Full::url_path(&(), ns));
        }
        assert_eq!(Pod::api_version(&()), Full::api_version(&()));
        assert_eq!(Pod::kind(&()), Full::kind(&()));
    }
}
