//! The site gateway (`sesame gateway --site NAME`): one site's data plane, fed by the portals
//! over HTTPS with the site token, serving its fail-static cache when no portal answers; and
//! the endpoint memory `sesame gateway` keeps for every peer, site or static.

pub mod cache;
pub mod client;
pub mod endpoints;
pub mod feed;
pub mod metrics;
pub mod ship;
pub mod spool;
pub mod state;
