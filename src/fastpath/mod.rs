//! The packet fast path shared by the gateway and the laptop agent: TUN and UDP offloads (split, coalesce, virtio_net_hdr, checksums).

pub mod csum;
pub mod gro;
pub mod gso;
pub mod tun;
pub mod udp;
pub mod vnet;

/// What WireGuard adds to an inner packet: a 16-byte data header and a 16-byte tag. A buffer
/// that boringtun encrypts into needs this much room beyond the packet.
pub const OVERHEAD: usize = 32;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
