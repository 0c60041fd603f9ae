//! The API server's answers, sans-IO: a list (`v1.PodList`,
//! `v1.ServiceList`, `apps/v1.ReplicaSetList`) and the lines of a watch
//! (`{"type": ..., "object": ...}`), reduced to what naming a peer needs.
//!
//! A watch is a stream of JSON objects, one per line. `ADDED`, `MODIFIED`
//! and `DELETED` carry the object; `BOOKMARK` carries only
//! `metadata.resourceVersion` (the point to resume from); `ERROR` carries a
//! `v1.Status` whose `code` 410 (`Expired`, `Gone`) means the version asked
//! for is older than the server keeps: the client lists again.

use std::net::IpAddr;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::pods::{Owner, Pod, RawPod, controller_named, reduce};

/// Why an answer of the API server could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not a Kubernetes {what}: {source}")]
    Shape {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unknown watch event type `{0}`")]
    EventType(String),
}

/// One kind of object the processor lists and watches.
pub trait Resource: Sized {
    /// Its list's kind, for messages (`PodList`).
    const LIST: &'static str;
    /// The collection's path (`/api/v1/pods`).
    const PATH: &'static str;
    /// The object as the API returns it (only the fields used).
    type Raw: DeserializeOwned;
    /// Reduces one object.
    fn reduce(raw: Self::Raw) -> Self;
}

impl Resource for Pod {
    const LIST: &'static str = "PodList";
    const PATH: &'static str = "/api/v1/pods";
    type Raw = RawPod;
    fn reduce(raw: RawPod) -> Pod {
        reduce(raw)
    }
}

/// A Service, reduced: its cluster IPs (none for a headless Service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub cluster_ips: Vec<IpAddr>,
}

#[derive(Deserialize)]
pub struct RawService {
    metadata: Meta,
    #[serde(default)]
    spec: ServiceSpec,
}

#[derive(Deserialize, Default)]
struct ServiceSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    cluster_ips: Vec<String>,
}

impl Resource for Service {
    const LIST: &'static str = "ServiceList";
    const PATH: &'static str = "/api/v1/services";
    type Raw = RawService;
    fn reduce(raw: RawService) -> Service {
        let mut ips: Vec<String> = raw.spec.cluster_ips;
        if ips.is_empty() {
            ips.extend(raw.spec.cluster_ip);
        }
        // `None` is a headless Service: no address of its own.
        let cluster_ips = ips.iter().filter_map(|i| i.parse().ok()).collect();
        Service {
            uid: raw.metadata.uid,
            name: raw.metadata.name,
            namespace: raw.metadata.namespace,
            cluster_ips,
        }
    }
}

/// A ReplicaSet, reduced: the Deployment that controls it, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaSet {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub deployment: Option<String>,
}

#[derive(Deserialize)]
pub struct RawReplicaSet {
    metadata: Meta,
}

impl Resource for ReplicaSet {
    const LIST: &'static str = "ReplicaSetList";
    const PATH: &'static str = "/apis/apps/v1/replicasets";
    type Raw = RawReplicaSet;
    fn reduce(raw: RawReplicaSet) -> ReplicaSet {
        let deployment = controller_named(&raw.metadata.owners, "Deployment");
        ReplicaSet {
            uid: raw.metadata.uid,
            name: raw.metadata.name,
            namespace: raw.metadata.namespace,
            deployment,
        }
    }
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
    uid: String,
    #[serde(default, rename = "ownerReferences")]
    owners: Vec<Owner>,
}

/// One page of a list.
#[derive(Debug)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Where a watch of the whole collection starts.
    pub resource_version: String,
    /// The token of the next page (`?continue=`), when there is one.
    pub next: Option<String>,
}

#[derive(Deserialize)]
#[serde(bound = "R: DeserializeOwned")]
struct RawList<R> {
    #[serde(default)]
    metadata: ListMeta,
    items: Vec<R>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
    #[serde(rename = "continue")]
    next: Option<String>,
}

/// Parses a list page of `T`.
pub fn parse_list<T: Resource>(body: &[u8]) -> Result<List<T>, ApiError> {
    let raw: RawList<T::Raw> = serde_json::from_slice(body).map_err(|source| ApiError::Shape {
        what: T::LIST,
        source,
    })?;
    Ok(List {
        items: raw.items.into_iter().map(T::reduce).collect(),
        resource_version: raw.metadata.resource_version,
        next: raw.metadata.next.filter(|c| !c.is_empty()),
    })
}

/// One line of a watch.
#[derive(Debug, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
    /// Nothing changed, but the watch is now at this resource version.
    Bookmark,
    /// The server ended the watch with a `v1.Status`; 410 means relist.
    Error(Status),
}

/// A `v1.Status` (the object of an `ERROR` event, or an error body).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

impl Status {
    /// The version asked for is older than the server keeps: list again.
    pub fn is_gone(&self) -> bool {
        self.code == 410 || self.reason == "Expired" || self.reason == "Gone"
    }
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    metadata: VersionOnly,
}

#[derive(Deserialize, Default)]
struct VersionOnly {
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

/// Parses one watch line: the event, and the resource version its object
/// carries (where to resume; empty for an `ERROR`).
pub fn parse_watch_line<T: Resource>(line: &[u8]) -> Result<(WatchEvent<T>, String), ApiError> {
    let shape = |source| ApiError::Shape {
        what: "watch event",
        source,
    };
    let ev: RawEvent = serde_json::from_slice(line).map_err(shape)?;
    if ev.kind == "ERROR" {
        let status = Status::deserialize(&ev.object).map_err(shape)?;
        return Ok((WatchEvent::Error(status), String::new()));
    }
    let version = ObjectMeta::deserialize(&ev.object)
        .map_err(shape)?
        .metadata
        .resource_version;
    let object = |v: serde_json::Value| {
        T::Raw::deserialize(v)
            .map(T::reduce)
            .map_err(|source| ApiError::Shape {
                what: T::LIST,
                source,
            })
    };
    let event = match ev.kind.as_str() {
        "ADDED" => WatchEvent::Added(object(ev.object)?),
        "MODIFIED" => WatchEvent::Modified(object(ev.object)?),
        "DELETED" => WatchEvent::Deleted(object(ev.object)?),
        "BOOKMARK" => WatchEvent::Bookmark,
        other => return Err(ApiError::EventType(other.to_owned())),
    };
    Ok((event, version))
}

/// Splits complete lines off the front of a watch's buffer: what a chunked
/// body delivers does not end where a line ends.
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete, non-empty line, without its `\n`.
    pub fn next_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let at = self.buf.iter().position(|b| *b == b'\n')?;
            let mut line: Vec<u8> = self.buf.drain(..=at).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Some(line);
            }
        }
    }

    /// Bytes waiting for their line's end.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: &[u8] = include_bytes!("fixtures/api-pods.json");
    const SERVICES: &[u8] = include_bytes!("fixtures/api-services.json");
    const REPLICASETS: &[u8] = include_bytes!("fixtures/api-replicasets.json");
    const WATCH: &[u8] = include_bytes!("fixtures/api-pods-watch.jsonl");

    #[test]
    fn lists_in_the_api_shape() {
        let pods = parse_list::<Pod>(PODS).unwrap();
        assert_eq!(pods.resource_version, "52001");
        assert_eq!(pods.next, None);
        let names: Vec<&str> = pods.items.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "web-7d4b9c6f8-x2k9p",
                "api-5c8d9e7f6-m3n4b",
                "cart-66b5d4c3f2-p9q8r"
            ]
        );
        assert_eq!(
            pods.items[2].replicaset.as_deref(),
            Some("cart-66b5d4c3f2"),
            "the owner as listed"
        );

        let svcs = parse_list::<Service>(SERVICES).unwrap();
        assert_eq!(svcs.resource_version, "52002");
        let api = &svcs.items[0];
        assert_eq!((api.name.as_str(), api.namespace.as_str()), ("api", "shop"));
        assert_eq!(
            api.cluster_ips,
            vec!["198.18.96.20".parse::<IpAddr>().unwrap()]
        );
        assert!(
            svcs.items[1].cluster_ips.is_empty(),
            "headless: clusterIP None"
        );

        let rs = parse_list::<ReplicaSet>(REPLICASETS).unwrap();
        assert_eq!(rs.next.as_deref(), Some("page-2-token"));
        assert_eq!(rs.items[0].deployment.as_deref(), Some("api"));
        // A ReplicaSet made by hand has no Deployment.
        assert_eq!(rs.items[1].deployment, None);
    }

    #[test]
    fn wrong_shapes_and_garbage_are_errors() {
        for body in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            b"{\"kind\":\"PodList\",\"items\":{}}",
            b"{\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":1}}]}",
            b"{\"kind\":\"Status\",\"code\":403}",
            b"[1,2,3]",
        ] {
            let e = parse_list::<Pod>(body).unwrap_err();
            assert!(e.to_string().contains("PodList"), "{e}");
        }
        // A pod without a uid is not a pod.
        assert!(
            parse_list::<Pod>(br#"{"items":[{"metadata":{"name":"x","namespace":"y"}}]}"#).is_err()
        );
    }

    #[test]
    fn a_watch_stream_with_bookmarks_deletes_and_410() {
        let mut lines = Lines::default();
        // Delivered in odd pieces, as chunks arrive.
        for piece in WATCH.chunks(37) {
            lines.push(piece);
        }
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line() {
            seen.push(parse_watch_line::<Pod>(&line).unwrap());
        }
        assert_eq!(lines.pending(), 0);
        assert_eq!(seen.len(), 5);
        let (WatchEvent::Added(p), v) = &seen[0] else {
            panic!("{:?}", seen[0])
        };
        assert_eq!((p.name.as_str(), v.as_str()), ("worker-0", "52010"));
        assert!(
            matches!(&seen[1], (WatchEvent::Modified(p), v) if p.name == "worker-0" && v == "52011")
        );
        assert!(matches!(&seen[2], (WatchEvent::Bookmark, v) if v == "52050"));
        let (WatchEvent::Deleted(p), _) = &seen[3] else {
            panic!("{:?}", seen[3])
        };
        assert_eq!(p.name, "api-5c8d9e7f6-m3n4b");
        let (WatchEvent::Error(s), v) = &seen[4] else {
            panic!("{:?}", seen[4])
        };
        assert!(s.is_gone() && v.is_empty(), "{s:?}");
        assert_eq!(s.code, 410);
    }

    #[test]
    fn bad_watch_lines_are_errors() {
        for line in [
            &b"{\"type\":\"ADDED\"}"[..],
            b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{}}}",
            b"{\"type\":\"EXPLODED\",\"object\":{}}",
            b"not json",
            b"{\"type\":\"ERROR\",\"object\":\"boom\"}",
        ] {
            assert!(
                parse_watch_line::<Pod>(line).is_err(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let mut l = Lines::default();
        l.push(b"\n\r\n  \n{\"a\"");
        assert_eq!(l.next_line(), None);
        assert_eq!(l.pending(), 4);
        l.push(b":1}\r\n");
        assert_eq!(l.next_line().as_deref(), Some(&b"{\"a\":1}"[..]));
    }
}
