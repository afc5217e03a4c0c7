//! IP protocol numbers (IANA) that the fast path, the packet parser and the policy name: one set.

/// Internet Control Message Protocol (IPv4).
pub const ICMP: u8 = 1;
/// Transmission Control Protocol.
pub const TCP: u8 = 6;
/// User Datagram Protocol.
pub const UDP: u8 = 17;
/// ICMP for IPv6.
pub const ICMPV6: u8 = 58;
