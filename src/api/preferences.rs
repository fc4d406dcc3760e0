//! `/v1/opt-outs/{e164}` and `/v1/consents/{e164}`: an account's opt-out and
//! consent lists. `PUT` records, `DELETE` removes (both 204), `GET` tells.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get};
use chrono::Utc;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Account;
use super::error::ApiError;
use crate::compliance::parse_recipient;
use crate::compliance::preferences::Source;
use crate::queue::PreferenceKind;

async fn put(
    state: &AppState,
    account: &str,
    kind: PreferenceKind,
    e164: &str,
) -> Result<StatusCode, ApiError> {
    let r = parse_recipient(e164)?;
    state
        .preferences
        .set(kind, account, &r.e164, Source::Api, Utc::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete(
    state: &AppState,
    account: &str,
    kind: PreferenceKind,
    e164: &str,
) -> Result<StatusCode, ApiError> {
    let r = parse_recipient(e164)?;
    state.preferences.clear(kind, account, &r.e164).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn show(
    state: &AppState,
    account: &str,
    kind: PreferenceKind,
    e164: &str,
) -> Result<Json<Value>, ApiError> {
    let r = parse_recipient(e164)?;
    let field = match kind {
        PreferenceKind::OptOut => "opted_out",
        PreferenceKind::Consent => "consented",
    };
    Ok(Json(match state.preferences.get(kind, account, &r.e164) {
        Some(p) => json!({ field: true, "since": p.since, "source": p.source }),
        None => json!({ field: false, "since": null, "source": null }),
    }))
}

/// The `GET`/`PUT`/`DELETE` routes of one preference list
/// (`/v1/opt-outs/{e164}` or `/v1/consents/{e164}`).
pub fn routes(kind: PreferenceKind) -> MethodRouter<AppState> {
    get(
        move |State(state): State<AppState>,
              Account(account): Account,
              Path(e164): Path<String>| async move { show(&state, &account, kind, &e164) },
    )
    .put(
        move |State(state): State<AppState>,
              Account(account): Account,
              Path(e164): Path<String>| async move { put(&state, &account, kind, &e164).await },
    )
    .delete(
        move |State(state): State<AppState>,
              Account(account): Account,
              Path(e164): Path<String>| async move {
            delete(&state, &account, kind, &e164).await
        },
    )
}
