//! The stopping order: stages in [`Stage::ORDER`], roles of a stage in start order, each role
//! signalled only when its stage comes; a failing role stops the process.

use std::sync::Arc;

use super::*;

type Log = Arc<parking_lot::Mutex<Vec<String>>>;

fn looping(roles: &mut Roles, log: &Log, name: &'static str, stage: Stage) {
    let log = Arc::clone(log);
    roles.spawn(name, stage, move |mut stop| async move {
        let _ = stop.wait_for(|s| *s).await;
        log.lock().push(format!("{name} stopped"));
        Ok(())
    });
}

#[tokio::test]
async fn roles_stop_stage_by_stage_in_the_order_written_once() {
    let log: Log = Arc::default();
    let mut roles = Roles::new();
    // Registered out of order on purpose: the stage decides, not the start order.
    looping(&mut roles, &log, "flow audit", Stage::AuditWriter);
    {
        let log = Arc::clone(&log);
        roles.at_stop("store", Stage::Last, move || async move {
            log.lock().push("store stopped".into());
            Ok(())
        });
    }
    looping(&mut roles, &log, "publisher", Stage::Loops);
    {
        let log = Arc::clone(&log);
        roles.at_stop("gateway", Stage::DataPlane, move || async move {
            log.lock().push("gateway stopped".into());
            Ok(())
        });
    }
    looping(&mut roles, &log, "portal", Stage::Front);
    looping(&mut roles, &log, "metrics", Stage::Front);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    roles.shutdown_on(async move {
        let _ = rx.await;
    });
    let run = tokio::spawn(roles.run());
    tokio::task::yield_now().await;
    assert!(log.lock().is_empty(), "nothing stops before the request");
    tx.send(()).expect("send");
    run.await.expect("join").expect("clean stop");
    // The roles of one stage share its signal: they stop together, in any order.
    let mut log = log.lock().clone();
    log[..2].sort();
    assert_eq!(
        log,
        [
            "metrics stopped",
            "portal stopped",
            "publisher stopped",
            "gateway stopped",
            "flow audit stopped",
            "store stopped"
        ]
    );
}

#[tokio::test]
async fn a_failing_role_stops_every_role_and_its_error_is_returned() {
    let log: Log = Arc::default();
    let mut roles = Roles::new();
    looping(&mut roles, &log, "publisher", Stage::Loops);
    roles.spawn("portal", Stage::Front, |_stop| async {
        anyhow::bail!("address in use")
    });
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), roles.run())
        .await
        .expect("the failure stops the process")
        .expect_err("the error comes back");
    assert_eq!(format!("{err:#}"), "portal: address in use");
    assert_eq!(*log.lock(), ["publisher stopped"]);
}
