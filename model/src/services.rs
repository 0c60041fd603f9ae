//! Shared state that only one crate's components use, held by the
//! [`crate::Context`] and keyed by its type.
//!
//! The typed fields of the context are for state that crosses crates (the
//! `dns` receiver writes names the `peer` processor reads, so the model
//! must name the type). Some state is shared only among components of one
//! crate: the host's one conntrack service, which every `ebpf` receiver
//! with NAT reads; the cloud detections and Kubernetes clients that
//! processors of several pipelines share. Its type belongs to that crate,
//! and the model cannot name it (the model depends on no component
//! crate). [`Services`] holds such state for the one agent: the owning
//! crate asks for its type and gets the agent's one instance.
//!
//! A type used here must be cheap to clone (a handle: an `Arc` inside) and
//! have a `Default` that is an empty, working instance, as the context's
//! own services do. To own a helper that stops when its last user is gone,
//! keep a `Weak` in the slot (the conntrack service does).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One agent's crate-owned shared services, by type. Cheap to clone:
/// clones share the same services.
#[derive(Clone, Default)]
pub struct Services(Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>);

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |m| m.len());
        f.debug_struct("Services").field("held", &n).finish()
    }
}

impl Services {
    /// The agent's one `T`: the instance an earlier call created, else a new
    /// `T::default()`, kept for every later call.
    pub fn get<T: Any + Clone + Default + Send + Sync>(&self) -> T {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let slot = held
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(T::default()));
        // Keyed by the TypeId of T, the entry is a T; were it not, a new
        // one takes its place rather than a panic.
        if let Some(t) = slot.downcast_ref::<T>() {
            return t.clone();
        }
        let t = T::default();
        *slot = Box::new(t.clone());
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Counter(Arc<std::sync::atomic::AtomicU32>);

    #[derive(Clone, Default)]
    struct Other(Arc<std::sync::atomic::AtomicU32>);

    #[test]
    fn one_instance_per_type_shared_by_clones() {
        use std::sync::atomic::Ordering::Relaxed;
        let s = Services::default();
        s.get::<Counter>().0.fetch_add(1, Relaxed);
        s.clone().get::<Counter>().0.fetch_add(2, Relaxed);
        s.get::<Other>().0.fetch_add(10, Relaxed);
        assert_eq!(s.get::<Counter>().0.load(Relaxed), 3);
        assert_eq!(s.get::<Other>().0.load(Relaxed), 10);
        // Another agent's services are its own.
        assert_eq!(Services::default().get::<Counter>().0.load(Relaxed), 0);
    }
}
