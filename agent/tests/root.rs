//! The agent's tests that need root: namespaces, TUN, a wireguard-go peer.
//! `cargo test -p sesame-agent --test root` (as root).

mod common;

mod root {
    mod interop;
    mod sites;
}
