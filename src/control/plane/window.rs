//! One device's access window published on its own: its peer (protected rules open until the
//! window's end) to the local gateway and to the site feeds, without computing the whole set.

use super::ControlPlane;
use crate::control::desired::{device_peer, ActiveDevice};
use crate::control::sites::site_sets;
use crate::store::{Device, DeviceStatus};

impl ControlPlane {
    /// Publishes `device`'s window, open until `until_ms` (after an unlock committed): O(1)
    /// instead of O(devices), so 50 unlocks at once do not each wait for a whole computation
    /// (nor for one already running: the publisher then carries the window right after it).
    /// Falls back to [`Self::publish_now`] when the device is not active, not a VPN user, or the
    /// gateway refuses the peer. The change log's `window` row then needs no recomputation.
    pub async fn publish_window(&self, device: &Device, groups: &[String], until_ms: i64) {
        if device.status != DeviceStatus::Active || device.suspended_at.is_some() {
            return self.publish_now().await;
        }
        let active = ActiveDevice::of(device, groups, Some(until_ms));
        let config = self.config.get();
        let Some(peer) = device_peer(&config, &active) else {
            return self.publish_now().await;
        };
        // A whole computation under way is not waited for (at 100,000 devices it takes long):
        // if it read the store before this window, the change log's row for it, not marked
        // published, makes the publisher compute again right after; if after, it has it.
        let Ok(guard) = self.publish_lock.try_lock() else {
            self.wake.notify_one();
            return;
        };
        if let Some(hub) = self.feeds.get() {
            hub.upsert_peers(site_sets(&config, std::slice::from_ref(&active)));
        }
        let applied = self.sink.upsert_peer(peer.clone());
        if applied {
            if let Some(last) = self.last.lock().as_mut() {
                last.retain(|p| p.public_key != peer.public_key);
                last.push(peer);
            }
            self.published.lock().insert(("window", device.id));
        }
        drop(guard);
        if applied {
            self.publications
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            self.publish_now().await;
        }
    }
}
