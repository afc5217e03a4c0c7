//! The packet fast path shared by the gateway and the laptop agent: TUN and UDP offloads (split, coalesce, virtio_net_hdr, checksums).

pub mod csum;
pub mod gro;
pub mod gso;
pub mod tun;
pub mod udp;
pub mod vnet;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
