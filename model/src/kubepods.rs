//! Which pod and container a process runs in, from its cgroup path
//! (`/proc/<pid>/cgroup`). Sans-IO: callers pass the file's text.
//!
//! It lives in the model because two crates read it: the `ebpf` receiver's
//! process attribution, which reads `/proc/<pid>/cgroup` once while the
//! process runs and puts the pod UID on the flow's Resource
//! (`k8s.pod.uid`), and the `kubernetes` processor, which names that pod.
//!
//! The kubelet puts every pod in a cgroup named after its UID, under
//! `kubepods`, and the runtime names each container's cgroup after the
//! container id (64 hex digits). The shapes differ by cgroup driver and
//! runtime:
//!
//! | driver | shape (burstable QoS; guaranteed pods skip the QoS level) |
//! |---|---|
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, '_' for '-'>.slice/<runtime>-<id>.scope` with `<runtime>` `cri-containerd`, `crio` or `docker` |
//! | cgroupfs | `/kubepods/burstable/pod<uid>/<id>` (containerd, Docker) or `.../crio-<id>` (CRI-O) |
//! | systemd, containerd outside systemd | `.../kubepods-burstable-pod<uid>.slice:cri-containerd:<id>` |
//!
//! A line of cgroup v1 (`N:controllers:/path`) and the v2 line
//! (`0::/path`) read the same way; the first line naming a pod wins. A
//! process in the pod's cgroup itself (the pause container on some
//! runtimes) has the pod but no container.

/// The pod (and container) a cgroup path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's UID, with dashes (`metadata.uid`).
    pub pod_uid: String,
    /// The container id as the runtime names it (64 hex digits), the
    /// `containerID` of the pod's status without its `runtime://` prefix.
    pub container_id: Option<String>,
}

/// The pod and container of the first `kubepods` line of a
/// `/proc/<pid>/cgroup` text; None outside Kubernetes.
pub fn parse_cgroup(text: &str) -> Option<PodRef> {
    text.lines().find_map(|line| {
        // `hierarchy:controllers:path`; the path may itself hold ':'
        // (`...slice:cri-containerd:<id>`), so split twice only.
        let mut it = line.splitn(3, ':');
        let (_, _, path) = (it.next()?, it.next()?, it.next()?);
        parse_path(path)
    })
}

/// The pod and container a cgroup path names.
pub fn parse_path(path: &str) -> Option<PodRef> {
    if !path.contains("kubepods") {
        return None;
    }
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let pod_seg = segments.by_ref().find_map(pod_uid)?;
    // The container is named below the pod's cgroup: in the next segment,
    // or after ':' in the pod's own segment (containerd's systemd naming
    // outside systemd).
    let container_id = segments
        .next()
        .and_then(hex64)
        .or_else(|| pod_seg.1.and_then(hex64));
    Some(PodRef {
        pod_uid: pod_seg.0,
        container_id,
    })
}

/// The pod UID a segment names (`pod<uid>`, `kubepods-...-pod<uid>.slice`),
/// with what follows a ':' in it.
fn pod_uid(seg: &str) -> Option<(String, Option<&str>)> {
    let (name, rest) = match seg.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (seg, None),
    };
    let at = name.rfind("pod")?;
    let uid = name[at + 3..].trim_end_matches(".slice");
    if uid.len() != 36 {
        return None;
    }
    let ok = uid.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-' || c == '_',
        _ => c.is_ascii_hexdigit(),
    });
    ok.then(|| (uid.replace('_', "-").to_ascii_lowercase(), rest))
}

/// The last run of exactly 64 hex digits in a segment
/// (`cri-containerd-<id>.scope`, `crio-<id>`, `<id>`, `cri-containerd:<id>`).
fn hex64(seg: &str) -> Option<String> {
    seg.split(|c: char| !c.is_ascii_hexdigit())
        .rev()
        .find(|run| run.len() == 64)
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8f3c2a1e-5b6d-4c7e-9f80-1a2b3c4d5e6f";
    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn want(container: bool) -> Option<PodRef> {
        Some(PodRef {
            pod_uid: UID.into(),
            container_id: container.then(|| ID.into()),
        })
    }

    #[test]
    fn systemd_driver_every_runtime_and_qos() {
        let u = UID.replace('-', "_");
        for runtime in ["cri-containerd", "crio", "docker"] {
            for qos in ["burstable", "besteffort"] {
                let line = format!(
                    "0::/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{u}.slice/{runtime}-{ID}.scope\n"
                );
                assert_eq!(parse_cgroup(&line), want(true), "{line}");
            }
            // Guaranteed pods have no QoS level.
            let line = format!("0::/kubepods.slice/kubepods-pod{u}.slice/{runtime}-{ID}.scope");
            assert_eq!(parse_cgroup(&line), want(true), "{line}");
        }
    }

    #[test]
    fn cgroupfs_driver_and_v1_lines() {
        for line in [
            format!("0::/kubepods/burstable/pod{UID}/{ID}"),
            format!("0::/kubepods/pod{UID}/{ID}"),
            format!("0::/kubepods/besteffort/pod{UID}/crio-{ID}"),
            format!("12:memory:/kubepods/burstable/pod{UID}/{ID}\n0::/"),
        ] {
            assert_eq!(parse_cgroup(&line), want(true), "{line}");
        }
    }

    #[test]
    fn containerd_systemd_naming_outside_systemd() {
        let u = UID.replace('-', "_");
        let line = format!(
            "0::/system.slice/containerd.service/kubepods-burstable-pod{u}.slice:cri-containerd:{ID}"
        );
        assert_eq!(parse_cgroup(&line), want(true));
    }

    #[test]
    fn pod_without_container_and_not_kubernetes() {
        assert_eq!(
            parse_cgroup(&format!("0::/kubepods/burstable/pod{UID}")),
            want(false)
        );
        for line in [
            "0::/user.slice/user-0.slice/session-1.scope",
            "0::/system.slice/docker-0123.scope",
            // A 'pod' that is not a UID.
            "0::/kubepods/burstable/podzzz/abc",
            "",
            "garbage without colons",
        ] {
            assert_eq!(parse_cgroup(line), None, "{line}");
        }
    }
}
