use super::*;
use crate::directory::DirectoryError;
use crate::store::StoreError;

fn all() -> Vec<ApiError> {
    let service = [
        ServiceError::Invalid("x".into()),
        ServiceError::Directory(DirectoryError::InvalidCredentials),
        ServiceError::Directory(DirectoryError::EmptyPassword),
        ServiceError::NotVpnUser,
        ServiceError::AccountDisabled,
        ServiceError::InvalidCode,
        ServiceError::Store(StoreError::CodeExpired),
        ServiceError::Store(StoreError::CodeAlreadyUsed),
        ServiceError::Store(StoreError::CodeWrongUser),
        ServiceError::InvalidPublicKey(crate::key::KeyError::AllZero),
        ServiceError::Store(StoreError::PublicKeyInUse),
        ServiceError::Unauthenticated,
        ServiceError::Forbidden,
        ServiceError::NotFound,
        ServiceError::DeviceRevoked,
        ServiceError::DeviceSuspended,
        ServiceError::DeviceExpired,
        ServiceError::TooManyAttempts {
            retry_after_secs: 3,
        },
        ServiceError::UnknownUser("x".into()),
        ServiceError::DirectoryTimeout,
        ServiceError::DatabaseTimeout,
        ServiceError::NotWired("the gateway"),
        ServiceError::Query(QueryError::BadLimit("0".into())),
    ];
    let mut all: Vec<ApiError> = service.into_iter().map(ApiError::from).collect();
    all.extend([
        ApiError::BadRequest("x".into()),
        ApiError::PayloadTooLarge,
        ApiError::NoRoute,
        ApiError::MethodNotAllowed,
        ApiError::TimedOut,
        ApiError::CsrfRejected("x"),
    ]);
    all
}

#[test]
fn every_error_has_a_bilingual_message_and_a_known_code() {
    for e in all() {
        let m = e.message();
        assert!(m.contains(" / "), "{m}");
        assert!(e.code().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        assert!(e.status().is_client_error() || e.status().is_server_error());
    }
}

#[test]
fn statuses_and_codes_of_service_refusals_are_the_api_contract() {
    let cases: [(ServiceError, u16, &str); 10] = [
        (
            ServiceError::Directory(DirectoryError::InvalidCredentials),
            401,
            "invalid_credentials",
        ),
        (
            ServiceError::Directory(DirectoryError::Disabled),
            403,
            "account_disabled",
        ),
        (
            ServiceError::Store(StoreError::CodeNotFound),
            404,
            "invalid_code",
        ),
        (
            ServiceError::Store(StoreError::CodeAlreadyUsed),
            410,
            "code_already_used",
        ),
        (
            ServiceError::Store(StoreError::PublicKeyInUse),
            409,
            "public_key_in_use",
        ),
        (
            ServiceError::Store(StoreError::DeviceTooOld(1)),
            403,
            "device_expired",
        ),
        (
            ServiceError::Store(StoreError::RotationTooSoon {
                retry_after_secs: 9,
            }),
            429,
            "too_many_attempts",
        ),
        (ServiceError::DirectoryTimeout, 503, "directory_unavailable"),
        (
            ServiceError::Query(QueryError::UnknownResource("x".into())),
            404,
            "unknown_resource",
        ),
        (ServiceError::NotWired("x"), 500, "internal_error"),
    ];
    for (e, status, code) in cases {
        let e = ApiError::from(e);
        assert_eq!((e.status().as_u16(), e.code()), (status, code), "{e}");
    }
}

#[test]
fn too_many_attempts_sets_retry_after() {
    for e in [
        ServiceError::TooManyAttempts {
            retry_after_secs: 42,
        },
        ServiceError::Store(StoreError::RotationTooSoon {
            retry_after_secs: 42,
        }),
    ] {
        let r = ApiError::from(e).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"42"[..])
        );
    }
}

#[test]
fn the_logged_cause_names_the_source() {
    let e = ApiError::from(ServiceError::Directory(DirectoryError::InvalidCredentials));
    let r = e.into_response();
    let cause = r.extensions().get::<ErrorCause>().map(|c| c.0.clone());
    assert_eq!(
        cause.as_deref(),
        Some("directory: invalid username or password")
    );
}
