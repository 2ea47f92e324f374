use axum::body::to_bytes;

use super::*;

async fn body_of(response: Response) -> serde_json::Value {
    let bytes = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    serde_json::from_slice(&bytes).expect("json")
}

#[tokio::test]
async fn job_errors_answer_their_status_in_the_openai_shape() {
    let cases = [
        (JobError::NotFound("j1".into()), 404, "not_found_error"),
        (
            JobError::Invalid("no such template".into()),
            400,
            "invalid_request_error",
        ),
        (
            JobError::Forbidden("not yours".into()),
            403,
            "permission_error",
        ),
        (
            JobError::Conflict {
                id: "j1".into(),
                state: protocol::JobState::Running,
                why: "no result yet",
            },
            409,
            "conflict_error",
        ),
        (JobError::Full(10), 503, "server_error"),
        (JobError::Disabled, 503, "server_error"),
    ];
    for (error, status, kind) in cases {
        let message = error.to_string();
        let response = Failure::from(error).into_response();
        assert_eq!(response.status().as_u16(), status, "{message}");
        if status == 503 {
            assert!(response.headers().contains_key(header::RETRY_AFTER));
        }
        let body = body_of(response).await;
        assert_eq!(body["error"]["message"], message);
        assert_eq!(body["error"]["type"], kind);
    }
}

#[tokio::test]
async fn bad_bodies_are_400_and_big_payloads_413() {
    let bad = Failure::from(body::submit(b"{}").expect_err("no service")).into_response();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_of(bad).await["error"]["type"], "invalid_request_error");
    let big = format!(
        r#"{{"service": "s", "payload": "{}"}}"#,
        "x".repeat(protocol::job::MAX_JOB_PAYLOAD + 1)
    );
    let big = Failure::from(body::submit(big.as_bytes()).expect_err("too big")).into_response();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn job_ids_are_checked() {
    assert!(job_id("j-0123abc").is_ok());
    assert_eq!(
        job_id("../etc").expect_err("bad").status,
        StatusCode::BAD_REQUEST
    );
    assert!(job_id("").is_err());
}

#[test]
fn the_body_limit_holds_a_base64_payload_at_the_limit() {
    let b64 = protocol::job::MAX_JOB_PAYLOAD.div_ceil(3) * 4;
    assert!(BODY_LIMIT > b64);
}
