//! Getting a client that works, or failing fast saying why: the
//! configuration (KUBECONFIG, ~/.kube/config or the in-cluster service
//! account) and, once, whether the API server accepts tortie's credentials
//! and lets it list every kind it watches. These are operator mistakes
//! that retrying cannot fix; an unreachable server is not one of them
//! (the watchers retry it), so a check that cannot reach the server passes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, ListParams};

/// Why tortie cannot use the Kubernetes API; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "KUBECONFIG names {}, which does not exist; point KUBECONFIG at a kubeconfig file, \
         or unset it inside a pod to use the service account",
        path.display()
    )]
    KubeconfigMissing { path: PathBuf },
    #[error(
        "no Kubernetes configuration: KUBECONFIG is not set, {} does not exist, and this is \
         not a pod (KUBERNETES_SERVICE_HOST is not set); set KUBECONFIG to a kubeconfig file, \
         or run tortie as the DaemonSet in manifests/",
        home_config.display()
    )]
    NoConfig { home_config: PathBuf },
    #[error(
        "cannot load the Kubernetes configuration: {reason}; check KUBECONFIG (or the pod's \
         service account token under /var/run/secrets/kubernetes.io/serviceaccount)"
    )]
    Config { reason: String },
    #[error("cannot create a Kubernetes client: {reason}")]
    Client { reason: String },
    #[error(
        "the API server rejected tortie's credentials listing {resource} (401 Unauthorized: \
         {message}); the token or client certificate is invalid or expired: renew the \
         kubeconfig's credentials or the service account token"
    )]
    Unauthorized { resource: String, message: String },
    #[error(
        "tortie may not list {resource} (403 Forbidden: {message}); grant its service account \
         get, list and watch on {resource} (the ClusterRole in manifests/rbac.yaml)"
    )]
    Forbidden { resource: String, message: String },
}

/// What the environment says about where a configuration could come from.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub kubeconfig: Option<String>,
    pub home: Option<PathBuf>,
    pub in_cluster: bool,
}

impl Environment {
    pub fn current() -> Environment {
        Environment {
            kubeconfig: std::env::var("KUBECONFIG").ok().filter(|s| !s.is_empty()),
            home: std::env::var_os("HOME").map(PathBuf::from),
            in_cluster: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        }
    }

    /// The specific mistake, when configuration inference failed.
    pub fn explain(&self, reason: &str) -> ConnectError {
        if let Some(list) = &self.kubeconfig
            && !self.in_cluster
            && let Some(missing) = list
                .split(':')
                .find(|p| !p.is_empty() && !Path::new(p).exists())
        {
            return ConnectError::KubeconfigMissing {
                path: PathBuf::from(missing),
            };
        }
        let home_config = self
            .home
            .clone()
            .unwrap_or_else(|| PathBuf::from("~"))
            .join(".kube/config");
        if self.kubeconfig.is_none() && !self.in_cluster && !home_config.exists() {
            return ConnectError::NoConfig { home_config };
        }
        ConnectError::Config {
            reason: reason.to_string(),
        }
    }
}

/// Loads the configuration and builds a client; no request is made.
pub async fn client() -> Result<kube::Client, ConnectError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Environment::current().explain(&e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| ConnectError::Client {
        reason: e.to_string(),
    })
}

/// Lists one object of each resource (in parallel, within `deadline`):
/// 401 and 403 are errors; anything else — success, 404 for a kind whose
/// CRD is not installed, a server that cannot be reached — passes.
pub async fn check_access(
    client: &kube::Client,
    resources: &[ApiResource],
    deadline: Duration,
) -> Result<(), ConnectError> {
    let checks = resources.iter().map(|ar| async move {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
        let what = if ar.group.is_empty() {
            ar.plural.clone()
        } else {
            format!("{}.{}", ar.plural, ar.group)
        };
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Err(kube::Error::Api(s)) if s.code == 401 => Err(ConnectError::Unauthorized {
                resource: what,
                message: s.message.clone(),
            }),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(ConnectError::Forbidden {
                resource: what,
                message: s.message.clone(),
            }),
            _ => Ok(()),
        }
    });
    match tokio::time::timeout(deadline, futures::future::join_all(checks)).await {
        Ok(results) => results.into_iter().collect(),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_a_missing_kubeconfig_and_a_missing_configuration() {
        let env = Environment {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            home: Some("/root".into()),
            in_cluster: false,
        };
        let e = env.explain("kube said so");
        assert_eq!(
            e,
            ConnectError::KubeconfigMissing {
                path: "/nonexistent/kubeconfig".into()
            }
        );
        assert!(e.to_string().contains("/nonexistent/kubeconfig"), "{e}");
        let none = Environment {
            kubeconfig: None,
            home: Some("/nonexistent-home".into()),
            in_cluster: false,
        };
        let e = none.explain("x");
        assert!(
            e.to_string()
                .contains("/nonexistent-home/.kube/config does not exist"),
            "{e}"
        );
        assert!(
            e.to_string().contains("KUBERNETES_SERVICE_HOST is not set"),
            "{e}"
        );
        // In a pod, the in-cluster loader's own reason is the useful one.
        let pod = Environment {
            kubeconfig: None,
            home: None,
            in_cluster: true,
        };
        let e = pod.explain("token file not found");
        assert!(
            matches!(e, ConnectError::Config { ref reason } if reason == "token file not found")
        );
    }
}
