//! A rule's peers as the calculation holds them: each side's selectors
//! (with Calico's namespace and service-account scoping applied) and its
//! nets, parsed once, when a policy or profile is taken in. A rule with a
//! selector or net that does not parse cannot be held, so its policy or
//! profile is refused with a note (validation refuses such objects before
//! they get here). The compiler reads only these parsed values: it has no
//! fallback to choose for a field it cannot read.

use ipnet::IpNet;

use super::{namespace_selector, prefix_labels};
use crate::model::convert::{SERVICE_ACCOUNT_LABEL, SERVICE_ACCOUNT_LABEL_PREFIX};
use crate::model::types::{EntityRule, Rule};
use crate::model::validate::parse_net;
use crate::selector::{self, NAMESPACE_LABEL, Selector};

/// One side (source or destination) of a rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Side {
    /// Endpoints the side may be: `None` for no constraint.
    pub positive: Option<Selector>,
    /// The `notSelector`, as written.
    pub negative: Option<Selector>,
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
}

/// Both sides of one rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Peers {
    pub source: Side,
    pub destination: Side,
}

/// The peers of a policy's or profile's rules, in rule order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulePeers {
    pub ingress: Vec<Peers>,
    pub egress: Vec<Peers>,
}

impl RulePeers {
    /// The peers of `ingress` and `egress` rules of a policy in namespace
    /// `ns` (`None`: global); the first field that does not parse, as
    /// `ingress[0].source.selector: …`, when one does not.
    pub fn of(ingress: &[Rule], egress: &[Rule], ns: Option<&str>) -> Result<RulePeers, String> {
        let list = |rules: &[Rule], dir: &str| -> Result<Vec<Peers>, String> {
            let at = |i: usize, side: &str, e| {
                side_of(e, ns).map_err(|m| format!("{dir}[{i}].{side}.{m}"))
            };
            (rules.iter().enumerate())
                .map(|(i, r)| {
                    Ok(Peers {
                        source: at(i, "source", &r.source)?,
                        destination: at(i, "destination", &r.destination)?,
                    })
                })
                .collect()
        };
        Ok(RulePeers {
            ingress: list(ingress, "ingress")?,
            egress: list(egress, "egress")?,
        })
    }
}

/// A selector field as Calico reads it: an empty string is the same as no
/// field at all.
fn given(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|t| !t.is_empty())
}

fn parsed(text: &str, field: &str) -> Result<Selector, String> {
    selector::parse(text).map_err(|e| format!("{field}: {e}"))
}

fn nets(list: &[String], field: &str) -> Result<Vec<IpNet>, String> {
    (list.iter().enumerate())
        .map(|(i, n)| {
            parse_net(n).ok_or_else(|| format!("{field}[{i}]: `{n}` is not an address or CIDR"))
        })
        .collect()
}

/// The service-account part of a rule side: names and selector (labels
/// with the `pcsa.` prefix), ANDed; `None` when neither is given.
fn service_account_selector(e: &EntityRule) -> Result<Option<Selector>, String> {
    let Some(sa) = e.service_accounts.as_ref() else {
        return Ok(None);
    };
    let by_selector = match given(&sa.selector) {
        Some(t) => Some(prefix_labels(
            &parsed(t, "serviceAccounts.selector")?,
            SERVICE_ACCOUNT_LABEL_PREFIX,
        )),
        None => None,
    };
    let by_name = (!sa.names.is_empty()).then(|| {
        let mut names = sa.names.clone();
        names.sort();
        names.dedup();
        Selector::In(SERVICE_ACCOUNT_LABEL.into(), names)
    });
    Ok(match (by_selector, by_name) {
        (Some(s), Some(n)) => Some(s.and(n)),
        (s, n) => s.or(n),
    })
}

/// One side with Calico's scoping (libcalico-go's rule conversion): the
/// positive selector is the side's service-account and endpoint selectors
/// ANDed, and — as soon as any of selector, notSelector or
/// namespaceSelector is given — ANDed with the namespaces it may reach:
/// those the namespaceSelector picks (`all()` = every namespace,
/// `global()` = no namespace, i.e. host endpoints and global network
/// sets), or else, in a namespaced policy, the policy's own namespace. The
/// negative selector is the notSelector as written.
pub fn side_of(e: &EntityRule, ns: Option<&str>) -> Result<Side, String> {
    let ns_selector = given(&e.namespace_selector);
    let not_selector = given(&e.not_selector);
    let scope = match ns_selector {
        Some(t) => Some(namespace_selector(t).map_err(|e| format!("namespaceSelector: {e}"))?),
        None => ns.map(|n| Selector::Equal(NAMESPACE_LABEL.into(), n.into())),
    };
    let own_selector = match given(&e.selector) {
        Some(t) => Some(parsed(t, "selector")?),
        None => None,
    };
    let own = match (service_account_selector(e)?, own_selector) {
        (Some(sa), Some(sel)) => Some(sa.and(sel)),
        (sa, sel) => sa.or(sel),
    };
    let scoped = own.is_some() || not_selector.is_some() || ns_selector.is_some();
    let positive = match (scope, own) {
        (Some(scope), Some(own)) if scoped => Some(scope.and(own)),
        (Some(scope), None) if scoped => Some(scope),
        (_, own) => own,
    };
    Ok(Side {
        positive,
        negative: not_selector.map(|t| parsed(t, "notSelector")).transpose()?,
        nets: nets(&e.nets, "nets")?,
        not_nets: nets(&e.not_nets, "notNets")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(json: &str) -> EntityRule {
        serde_json::from_str(json).expect("an EntityRule")
    }

    fn rule(source: &str) -> Rule {
        let json = format!(r#"{{"action": "Allow", "source": {source}}}"#);
        serde_json::from_str(&json).expect("a Rule")
    }

    #[test]
    fn a_field_that_does_not_parse_is_named_not_read_as_all() {
        let rules = [rule("{}"), rule(r#"{"selector": "app == "}"#)];
        let err = RulePeers::of(&[], &rules, Some("a")).unwrap_err();
        assert!(err.starts_with("egress[1].source.selector: "), "{err}");
        for (json, field) in [
            (r#"{"notSelector": "("}"#, "notSelector"),
            (r#"{"namespaceSelector": "x =="}"#, "namespaceSelector"),
            (
                r#"{"serviceAccounts": {"selector": "!"}}"#,
                "serviceAccounts.selector",
            ),
            (r#"{"nets": ["198.18.0.0/15", "nowhere"]}"#, "nets[1]"),
            (r#"{"notNets": ["198.18.0.0/33"]}"#, "notNets[0]"),
        ] {
            let err = side_of(&side(json), None).unwrap_err();
            assert!(err.starts_with(&format!("{field}: ")), "{json}: {err}");
        }
    }

    #[test]
    fn sides_are_scoped_as_calico_scopes_them() {
        let s = side_of(
            &side(r#"{"selector": "app == 'x'", "nets": ["198.18.0.1"]}"#),
            Some("a"),
        );
        let s = s.unwrap();
        let want = Selector::Equal(NAMESPACE_LABEL.into(), "a".into())
            .and(Selector::Equal("app".into(), "x".into()));
        assert_eq!(s.positive, Some(want));
        assert_eq!(s.nets, vec!["198.18.0.1/32".parse::<IpNet>().unwrap()]);
        let none = side_of(&side(r#"{"nets": ["198.18.0.0/16"]}"#), Some("a")).unwrap();
        assert_eq!(
            none.positive, None,
            "nets alone are not scoped to a namespace"
        );
        let not = side_of(&side(r#"{"notSelector": "app == 'x'"}"#), None).unwrap();
        assert_eq!(not.positive, None);
        assert_eq!(
            not.negative,
            Some(Selector::Equal("app".into(), "x".into()))
        );
        let scoped = side_of(&side(r#"{"notSelector": "app == 'x'"}"#), Some("a")).unwrap();
        assert_eq!(
            scoped.positive,
            Some(Selector::Equal(NAMESPACE_LABEL.into(), "a".into())),
            "a notSelector alone still keeps to the policy's namespace"
        );
    }
}
