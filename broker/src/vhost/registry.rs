//! [`VHosts`]: the broker's vhosts by name, created and deleted with access control.

use super::*;

/// The vhosts a broker serves.
#[derive(Debug)]
pub(crate) struct VHosts {
    /// Vhosts by name. Read by every `connection.open`; written only by the admin API
    /// (`add_vhost`/`delete_vhost`), briefly.
    pub(super) map: RwLock<HashMap<String, Arc<VHost>>>,
    /// The store new vhosts are created with (the management API reads its counters).
    pub(crate) store: Arc<dyn Persistence>,
    /// The broker's memory accounting, shared by every vhost's queues.
    pub(crate) memory: Arc<Memory>,
}

impl VHosts {
    /// The registry with the default vhost `/`.
    pub(crate) fn new(store: Arc<dyn Persistence>, memory: Arc<Memory>) -> Self {
        let mut map = HashMap::new();
        map.insert(
            "/".to_owned(),
            VHost::new("/", store.clone(), memory.clone()),
        );
        Self {
            map: RwLock::new(map),
            store,
            memory,
        }
    }

    /// The vhost named `name`, if it exists.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<VHost>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Creates vhost `name` (with the predeclared exchanges) unless it exists.
    pub(crate) fn add(&self, name: &str) -> Arc<VHost> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_insert_with(|| VHost::new(name, self.store.clone(), self.memory.clone()))
            .clone()
    }

    /// Removes vhost `name`; connections already in it keep their `Arc` until they close.
    pub(crate) fn remove(&self, name: &str) -> Option<Arc<VHost>> {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }
}
