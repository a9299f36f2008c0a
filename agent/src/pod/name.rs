//! Names as the kubelet writes them on a node: the `[NAMESPACE/]NAME` a user types, the pod
//! log directories `/var/log/pods/NAMESPACE_NAME_UID/` and the container log links
//! `/var/log/containers/POD_NAMESPACE_CONTAINER-ID.log`. Pure parsers.
//!
//! Namespaces, pod names and container names are DNS labels or subdomains (lowercase
//! letters, digits, `-`, `.`), so `_` separates the fields unambiguously.

use std::fmt;

/// A pod as the user names it: `NAME` (any namespace) or `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: Option<String>,
    pub name: String,
}

impl PodRef {
    /// Parses `[NAMESPACE/]NAME`; `Err` says which rule the text breaks.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (namespace, name) = match s.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, s),
        };
        if let Some(ns) = namespace {
            check_label("namespace", ns)?;
        }
        check_label("pod name", name)?;
        Ok(Self {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A Kubernetes object name: 1 to 253 of `a-z`, `0-9`, `-`, `.`, starting and ending with a
/// letter or digit.
fn check_label(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!(
            "the {what} is empty: give the pod as NAME or NAMESPACE/NAME"
        ));
    }
    if s.len() > 253 {
        return Err(format!("the {what} `{s}` is longer than 253 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "the {what} `{s}` contains `{c}`: Kubernetes names are lowercase letters, digits, `-` and `.` (give the pod as NAME or NAMESPACE/NAME)"
        ));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !s.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "the {what} `{s}` must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// One pod log directory name: `NAMESPACE_NAME_UID`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodDirName {
    pub namespace: String,
    pub name: String,
    /// As the kubelet writes it: a UUID with dashes, or 32 hex digits for a static pod.
    pub uid: String,
}

impl PodDirName {
    /// `None` for anything that is not a pod log directory name.
    pub fn parse(dir: &str) -> Option<Self> {
        let mut parts = dir.split('_');
        let (namespace, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || namespace.is_empty() || name.is_empty() || !is_uid(uid) {
            return None;
        }
        Some(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: uid.to_owned(),
        })
    }

    /// `NAMESPACE/NAME`.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A pod UID: a UUID (8-4-4-4-12 hex digits) or, for static pods, 32 hex digits.
pub fn is_uid(s: &str) -> bool {
    let hex = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_hexdigit());
    if s.len() == 32 {
        return hex(s);
    }
    let lens: Vec<usize> = s.split('-').map(str::len).collect();
    lens == [8, 4, 4, 4, 12] && s.split('-').all(hex)
}

/// One container log link name: `POD_NAMESPACE_CONTAINER-ID.log` (the kubelet's
/// `/var/log/containers`), which ties a runtime's container id to its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLogName {
    pub pod: String,
    pub namespace: String,
    pub container: String,
    /// The runtime's container id (64 hex digits).
    pub id: String,
}

impl ContainerLogName {
    /// `None` for anything that is not a container log link name.
    pub fn parse(file: &str) -> Option<Self> {
        let stem = file.strip_suffix(".log")?;
        let (rest, id) = stem.rsplit_once('-')?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut parts = rest.split('_');
        let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || pod.is_empty() || namespace.is_empty() || container.is_empty()
        {
            return None;
        }
        Some(Self {
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
            container: container.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// The names among `candidates` close to `wanted`, closest first, at most `max`: those that
/// start with it or contain it (a Deployment's pods are `NAME-HASH-XXXXX`), and those within
/// a few edits of it (a typo). `wanted` and the candidates are `NAMESPACE/NAME` or `NAME`;
/// when `wanted` has no namespace, only the candidates' names are compared.
pub fn similar<'a>(
    wanted: &PodRef,
    candidates: &'a [PodDirName],
    max: usize,
) -> Vec<&'a PodDirName> {
    let mut scored: Vec<(usize, &PodDirName)> = candidates
        .iter()
        .filter_map(|c| {
            let name_score = score(&wanted.name, &c.name)?;
            let ns_penalty = match &wanted.namespace {
                None => 0,
                Some(ns) if *ns == c.namespace => 0,
                // Another namespace counts, but after everything in the right one.
                Some(ns) => 100 + edit_distance(ns, &c.namespace),
            };
            Some((name_score + ns_penalty, c))
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().take(max).map(|(_, c)| c).collect()
}

/// How close `candidate` is to `wanted` (lower is closer), `None` when not close at all.
fn score(wanted: &str, candidate: &str) -> Option<usize> {
    if candidate == wanted {
        return Some(0);
    }
    if candidate.starts_with(wanted) || wanted.starts_with(candidate) {
        return Some(1);
    }
    if candidate.contains(wanted) || wanted.contains(candidate) {
        return Some(2);
    }
    let d = edit_distance(wanted, candidate);
    let allowed = (wanted.len() / 3).clamp(1, 3);
    (d <= allowed).then_some(2 + d)
}

/// Levenshtein distance over bytes (names are ASCII).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c2b8e-3d4a-4f5b-9c8d-0123456789ab";

    #[test]
    fn a_pod_is_name_or_namespace_slash_name() {
        let p = PodRef::parse("ingress/traefik-7d9f8b6c5-x2k9p").unwrap();
        assert_eq!(p.namespace.as_deref(), Some("ingress"));
        assert_eq!(p.name, "traefik-7d9f8b6c5-x2k9p");
        assert_eq!(p.to_string(), "ingress/traefik-7d9f8b6c5-x2k9p");
        let p = PodRef::parse("web-0").unwrap();
        assert_eq!((p.namespace, p.name.as_str()), (None, "web-0"));
    }

    #[test]
    fn a_bad_pod_argument_says_which_rule_it_breaks() {
        for (arg, says) in [
            ("", "is empty"),
            ("ns/", "pod name is empty"),
            ("/web", "namespace is empty"),
            ("a/b/c", "contains `/`"),
            ("Web", "contains `W`"),
            ("ns_x/web", "contains `_`"),
            ("-web", "start and end"),
        ] {
            let err = PodRef::parse(arg).unwrap_err();
            assert!(err.contains(says), "{arg:?}: {err}");
        }
    }

    #[test]
    fn pod_log_directories_give_namespace_name_and_uid() {
        let d = PodDirName::parse(&format!("kube-system_coredns-5d78c9869d-4xq7z_{UID}")).unwrap();
        assert_eq!(d.namespace, "kube-system");
        assert_eq!(d.name, "coredns-5d78c9869d-4xq7z");
        assert_eq!(d.uid, UID);
        assert_eq!(d.qualified(), "kube-system/coredns-5d78c9869d-4xq7z");
        // A static pod's UID is a 32-digit hash.
        let s =
            PodDirName::parse("kube-system_etcd-node1_0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(s.name, "etcd-node1");
    }

    #[test]
    fn other_directory_names_are_not_pods() {
        for dir in [
            "lost+found",
            UID, // the pre-1.14 layout: no name in it
            "ns_name",
            "ns_name_not-a-uid",
            &format!("ns_na_me_{UID}"),
            &format!("_name_{UID}"),
        ] {
            assert_eq!(PodDirName::parse(dir), None, "{dir}");
        }
    }

    #[test]
    fn container_log_links_tie_an_id_to_a_container_name() {
        let id = "a".repeat(64);
        let c = ContainerLogName::parse(&format!("web-0_shop_nginx-proxy-{id}.log")).unwrap();
        assert_eq!(
            (c.pod.as_str(), c.namespace.as_str(), c.container.as_str()),
            ("web-0", "shop", "nginx-proxy")
        );
        assert_eq!(c.id, id);
        assert_eq!(ContainerLogName::parse("web-0_shop_nginx-abc.log"), None);
        assert_eq!(
            ContainerLogName::parse(&format!("web-0_nginx-{id}.log")),
            None
        );
        assert_eq!(
            ContainerLogName::parse(&format!("web-0_shop_nginx-{id}.txt")),
            None
        );
    }

    #[test]
    fn uids_are_uuids_or_static_pod_hashes() {
        assert!(is_uid(UID));
        assert!(is_uid("0123456789abcdef0123456789abcdef"));
        assert!(!is_uid("6f1c2b8e_3d4a_4f5b_9c8d_0123456789ab"));
        assert!(!is_uid("6f1c2b8e-3d4a-4f5b-9c8d-0123456789a"));
        assert!(!is_uid("zf1c2b8e-3d4a-4f5b-9c8d-0123456789ab"));
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("traefik", "traefik"), 0);
        assert_eq!(edit_distance("traefik", "trafik"), 1);
        assert_eq!(edit_distance("traefik", "treafik"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    fn dir(ns: &str, name: &str) -> PodDirName {
        PodDirName {
            namespace: ns.into(),
            name: name.into(),
            uid: UID.into(),
        }
    }

    #[test]
    fn similar_names_put_prefixes_and_typos_first_and_leave_out_the_rest() {
        let pods = [
            dir("ingress", "traefik-7d9f8b6c5-x2k9p"),
            dir("kube-system", "coredns-5d78c9869d-4xq7z"),
            dir("ingress", "nginx-0"),
            dir("shop", "traefik-7d9f8b6c5-x2k9p"),
            dir("ingress", "traefic-0"),
        ];
        let wanted = PodRef::parse("ingress/traefik").unwrap();
        let got: Vec<String> = similar(&wanted, &pods, 5)
            .iter()
            .map(|d| d.qualified())
            .collect();
        assert_eq!(
            got,
            [
                "ingress/traefik-7d9f8b6c5-x2k9p",
                "shop/traefik-7d9f8b6c5-x2k9p"
            ]
        );
        // A typo in the full name.
        let wanted = PodRef::parse("ingress/ngnix-0").unwrap();
        let got: Vec<String> = similar(&wanted, &pods, 5)
            .iter()
            .map(|d| d.qualified())
            .collect();
        assert_eq!(got, ["ingress/nginx-0"]);
        // Nothing alike.
        let wanted = PodRef::parse("payments").unwrap();
        assert!(similar(&wanted, &pods, 5).is_empty());
    }
}
