//! The agent's tests that run as any user: enrolment errors over loopback.
//! `cargo test -p sesame-agent --test plain`.

mod common;

mod plain {
    mod transport;
}
