//! The store behind run.sh's pair through `sesame serve` and through a site gateway (issue 18):
//! a new SQLite database holding the bench laptop (its WireGuard public key given), enrolled
//! through the store's own path for a user in the VPN group and the group granted the bench
//! resource. Prints the laptop's tunnel address. No network.
//!
//! `pair_store --database sqlite:///PATH --public-key BASE64 --vpn-group DN --group DN`

use sesame::key::PublicKey;
use sesame::store::{AddressPool, Store};
use sesame_bench::args::Args;
use sesame_bench::devices;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::from_env()?;
    let url: String = args.req("database")?;
    let key: PublicKey = args.req("public-key")?;
    let groups = vec![args.req("vpn-group")?, args.req("group")?];
    let store = Store::connect(&url).await?;
    // The tunnel network of run.sh's gateways, the gateway's own address reserved.
    let pool = AddressPool {
        network: "100.64.0.0/16".parse()?,
        reserved: vec!["100.64.0.1".parse()?],
    };
    let (_, address) = devices::enrol_key(&store, &pool, 0, key, groups).await?;
    // The one line run.sh reads.
    #[allow(clippy::print_stdout)]
    {
        println!("{address}");
    }
    Ok(())
}
