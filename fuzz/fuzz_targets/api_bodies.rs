//! Fuzz the JSON request bodies of the HTTP API (`sesame::api`, shared with the agent): the
//! first byte picks the body type, the rest is decoded; what decodes must re-encode and decode
//! to the same JSON, and nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sesame::api::{CreateCodeRequest, DeviceConfig, EnrolRequest, LoginRequest, RotateRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: DeserializeOwned + Serialize>(body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<T>(body) else {
        return;
    };
    let Ok(once) = serde_json::to_value(&v) else {
        return;
    };
    let again: T = match serde_json::from_value(once.clone()) {
        Ok(a) => a,
        Err(e) => panic!("re-encoded body does not decode: {e}"),
    };
    assert_eq!(serde_json::to_value(&again).ok(), Some(once));
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => round_trip::<EnrolRequest>(body),
        1 => round_trip::<LoginRequest>(body),
        2 => round_trip::<RotateRequest>(body),
        3 => round_trip::<CreateCodeRequest>(body),
        _ => round_trip::<DeviceConfig>(body),
    }
});
