//! Tests that need root: network namespaces, TUN devices, wireguard-go laptops, `sesame serve`
//! and `sesame gateway` worlds, dpkg. `cargo test --test root` (as root).

mod common;

mod root {
    mod agent_e2e;
    mod agent_lockout;
    mod durability;
    mod fastpath_tun;
    mod gateway_e2e;
    mod login_flood;
    mod mfa_gateway;
    mod mfa_radius;
    mod outage;
    mod packaging;
    mod prod_gateway;
    mod prod_serve;
    mod serve_e2e;
    mod serve_flow_audit;
    mod site_gateway;
    mod sites_e2e;
    mod sync_hold;
}
