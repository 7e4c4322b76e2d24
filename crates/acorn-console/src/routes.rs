//! The console's routes: sign-in and sign-out, the pages, their actions, the event stream
//! and the embedded assets. Every page needs a session; every POST also needs the session's
//! CSRF token and a same-origin request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use acorn_backend::registry::RegistrationStatus;
use acorn_mqtt::{CommandKind, CommandMessage, Topics};
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures_util::StreamExt as _;
use maud::Markup;

use crate::auth::{self, Session};
use crate::cert::CertInfo;
use crate::fleet::now_ms;
use crate::pages::{self, device, fleet, live, login, tokens};
use crate::Shared;

type St = State<Arc<Shared>>;

/// Every console route, with the security headers on each answer.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(fleet_page))
        .route("/login", get(login_page).post(sign_in))
        .route("/login/once", get(sign_in_once))
        .route("/logout", post(sign_out))
        .route("/devices/{id}", get(device_page))
        .route("/devices/{id}/settings", post(send_settings))
        .route("/devices/{id}/command", post(send_command))
        .route("/devices/{id}/revoke", post(revoke))
        .route("/live", get(live_page))
        .route("/events", get(events))
        .route("/tokens", get(tokens_page).post(mint_token))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(axum::middleware::map_response(crate::security::headers))
        .with_state(shared)
}

/// A refusal or failure, shown as a page.
pub(crate) struct Refusal {
    status: StatusCode,
    title: &'static str,
    message: String,
    session: Option<Session>,
}

impl Refusal {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
            session: None,
        }
    }

    fn with(mut self, session: &Session) -> Self {
        self.session = Some(session.clone());
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let page = pages::error(self.title, &self.message, self.session.as_ref());
        (self.status, page).into_response()
    }
}

/// Why a page is not shown: no session (to the sign-in page), or a refusal.
pub(crate) enum PageError {
    SignIn,
    Refused(Refusal),
}

impl From<Refusal> for PageError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => Redirect::to("/login").into_response(),
            Self::Refused(r) => r.into_response(),
        }
    }
}

/// The session of a page request, or the way to the sign-in page.
fn page_session(shared: &Shared, headers: &HeaderMap) -> Result<Session, PageError> {
    shared.sessions.get(headers).ok_or(PageError::SignIn)
}

/// The fields of a posted form (an unreadable body reads as no fields: then the CSRF check
/// refuses it).
type Fields = Result<Form<HashMap<String, String>>, FormRejection>;

fn fields(form: Fields) -> HashMap<String, String> {
    form.map(|Form(f)| f).unwrap_or_default()
}

/// The session of an action: refused without one (401), from another origin or without the
/// session's CSRF token (403).
fn action_session(
    shared: &Shared,
    headers: &HeaderMap,
    fields: &HashMap<String, String>,
) -> Result<Session, Refusal> {
    let session = shared.sessions.get(headers).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            "Sign in first: this action needs a session.",
        )
    })?;
    let token_ok = fields
        .get("csrf")
        .is_some_and(|t| auth::same(t, &session.csrf));
    if !token_ok || !auth::same_origin(headers) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not come from this console's own page (its CSRF token is missing or wrong). Reload the page and try again.",
        )
        .with(&session));
    }
    Ok(session)
}

async fn login_page(State(shared): St, headers: HeaderMap) -> Response {
    if shared.sessions.get(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login::render(None).into_response()
}

/// Starts a session: the cookie, then the fleet.
fn start_session(shared: &Shared) -> Response {
    let id = shared.sessions.create();
    let cookie = auth::set_cookie(Some(&id), shared.admin.tls());
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn sign_in(State(shared): St, headers: HeaderMap, form: Fields) -> Response {
    let fields = fields(form);
    // Pasted keys often carry a newline; the key itself never has surrounding blanks.
    let key = fields.get("key").map(|k| k.trim()).unwrap_or("");
    if !auth::same_origin(&headers) {
        return Refusal::new(
            StatusCode::FORBIDDEN,
            "Refused",
            "Sign in from this console's own page.",
        )
        .into_response();
    }
    if !key.is_empty() && shared.admin.is_admin_key(key) {
        tracing::info!("console: signed in with the admin key");
        return start_session(&shared);
    }
    // A wrong key costs its sender half a second (the key is 256 random bits anyway).
    tokio::time::sleep(Duration::from_millis(500)).await;
    tracing::warn!("console: sign-in refused (wrong admin key)");
    (
        StatusCode::UNAUTHORIZED,
        login::render(Some("That is not the admin key.")),
    )
        .into_response()
}

async fn sign_in_once(State(shared): St, Query(query): Query<HashMap<String, String>>) -> Response {
    let token = query.get("token").map(String::as_str).unwrap_or("");
    if !token.is_empty() && shared.sessions.redeem(token) {
        tracing::info!("console: signed in with a one-time link");
        return start_session(&shared);
    }
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        "Link not valid",
        "This sign-in link was used already or has expired (each link signs in once). Sign in with the admin key instead.",
    )
    .into_response()
}

async fn sign_out(State(shared): St, headers: HeaderMap, form: Fields) -> Response {
    let fields = fields(form);
    if let Err(refusal) = action_session(&shared, &headers, &fields) {
        return refusal.into_response();
    }
    shared.sessions.end(&headers);
    tracing::info!("console: signed out");
    let cookie = auth::set_cookie(None, shared.admin.tls());
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[derive(Default, serde::Deserialize)]
struct FleetQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
}

async fn fleet_page(
    State(shared): St,
    headers: HeaderMap,
    query: Result<Query<FleetQuery>, QueryRejection>,
) -> Result<Markup, PageError> {
    let session = page_session(&shared, &headers)?;
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let records = shared
        .admin
        .devices()
        .await
        .map_err(|e| failed(&session, &e))?;
    let mut live = shared.fleet.devices();
    let now = pages::now_s();
    let rows: Vec<fleet::Row> = records
        .into_iter()
        .map(|record| fleet::Row {
            live: live.remove(&record.device_id).unwrap_or_default(),
            days_left: CertInfo::from_pem(&record.certificate_pem).map(|c| c.days_left(now)),
            record,
        })
        .collect();
    let count = |state: &str| rows.iter().filter(|r| r.state() == state).count();
    let online = rows
        .iter()
        .filter(|r| r.record.status == RegistrationStatus::Active && r.live.is_online())
        .count();
    let chart = shared.fleet.presses_per_minute(now_ms());
    let summary = fleet::Summary {
        total: rows.len(),
        online,
        revoked: count("revoked"),
        chart: &chart,
        linked: shared.fleet.linked(),
    };
    let rows = fleet::select(rows, &query.q, &query.sort);
    Ok(fleet::render(
        &session,
        &rows,
        &summary,
        &query.q,
        &query.sort,
    ))
}

fn failed(session: &Session, e: &acorn_backend::AdminError) -> Refusal {
    Refusal::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Failed",
        e.message.clone(),
    )
    .with(session)
}

fn not_found(session: &Session, id: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        "No such device",
        format!(
            "No device with id {:?} is registered.",
            id.chars().take(128).collect::<String>()
        ),
    )
    .with(session)
}

async fn device_page(
    State(shared): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Markup, PageError> {
    let session = page_session(&shared, &headers)?;
    let record = shared
        .admin
        .device(&id)
        .await
        .map_err(|e| failed(&session, &e))?
        .ok_or_else(|| not_found(&session, &id))?;
    let history = shared
        .admin
        .certificate_history(&id)
        .await
        .map_err(|e| failed(&session, &e))?;
    let live = shared.fleet.device(&id);
    let cert = CertInfo::from_pem(&record.certificate_pem);
    let notice = if let Some(request) = query.get("sent") {
        Some(format!(
            "Sent request {request}; the device's answer appears under Answers."
        ))
    } else if query.contains_key("revoked") {
        Some("Revoked: the certificate is on the CRL and the device's connection is closed.".into())
    } else {
        None
    };
    Ok(device::render(
        &session,
        &device::View {
            record: &record,
            live: &live,
            cert: cert.as_ref(),
            history: &history,
            notice,
        },
    ))
}

/// The device an action is for, known to the registry and not revoked.
async fn active_device(shared: &Shared, session: &Session, id: &str) -> Result<Topics, Refusal> {
    let record = shared
        .admin
        .device(id)
        .await
        .map_err(|e| failed(session, &e))?
        .ok_or_else(|| not_found(session, id))?;
    if record.status == RegistrationStatus::Revoked {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "Device revoked",
            "This device is revoked: it can no longer connect, so nothing can be sent to it.",
        )
        .with(session));
    }
    Topics::new(id)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "Bad device id", e.to_string()))
}

fn request_id() -> String {
    format!("console-{}", hex::encode(rand::random::<[u8; 6]>()))
}

fn bad_input(session: &Session, message: String) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "Not sent", message).with(session)
}

/// The settings update the form asks for, as the device would receive it; checked with the
/// device's own parser, so the console refuses exactly what the device would.
fn settings_payload(
    topics: &Topics,
    fields: &HashMap<String, String>,
    request_id: &str,
) -> Result<Vec<u8>, String> {
    let mut update = serde_json::Map::new();
    update.insert("requestId".into(), request_id.into());
    match fields.get("soundEnabled").map(String::as_str) {
        None | Some("") => {}
        Some("true") => {
            update.insert("soundEnabled".into(), true.into());
        }
        Some("false") => {
            update.insert("soundEnabled".into(), false.into());
        }
        Some(other) => return Err(format!("soundEnabled must be on or off, got {other:?}")),
    }
    for name in [
        "soundVolume",
        "ledBrightness",
        "cooldownMs",
        "heartbeatSeconds",
    ] {
        let Some(text) = fields.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value: i64 = text
            .parse()
            .map_err(|_| format!("{name} must be a whole number, got {text:?}"))?;
        update.insert(name.into(), value.into());
    }
    if update.len() == 1 {
        return Err("Fill in at least one setting to change.".into());
    }
    let payload = serde_json::Value::Object(update).to_string().into_bytes();
    acorn_mqtt::parse_inbound(topics, topics.settings(), &payload).map_err(|e| e.to_string())?;
    Ok(payload)
}

/// What an action on a device starts from: its form's fields, the session (checked with its
/// CSRF token), and the device's topics (registered, not revoked).
async fn device_action(
    shared: &Shared,
    headers: &HeaderMap,
    form: Fields,
    id: &str,
) -> Result<(HashMap<String, String>, Session, Topics), Refusal> {
    let fields = fields(form);
    let session = action_session(shared, headers, &fields)?;
    let topics = active_device(shared, &session, id).await?;
    Ok((fields, session, topics))
}

async fn send_settings(
    State(shared): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Fields,
) -> Result<Redirect, Refusal> {
    let (fields, session, topics) = device_action(&shared, &headers, form, &id).await?;
    let request = request_id();
    let payload =
        settings_payload(&topics, &fields, &request).map_err(|m| bad_input(&session, m))?;
    publish(&shared, &session, topics.settings().to_owned(), payload).await?;
    tracing::info!(device_id = %id, request_id = %request, "console: settings update sent");
    Ok(Redirect::to(&format!("/devices/{id}?sent={request}")))
}

async fn send_command(
    State(shared): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Fields,
) -> Result<Redirect, Refusal> {
    let (fields, session, topics) = device_action(&shared, &headers, form, &id).await?;
    let name = fields.get("command").map(String::as_str).unwrap_or("");
    let command: CommandKind = device::COMMANDS
        .iter()
        .any(|(c, _)| *c == name)
        .then(|| serde_json::from_value(serde_json::Value::from(name)).ok())
        .flatten()
        .ok_or_else(|| bad_input(&session, format!("There is no command {name:?}.")))?;
    let message = CommandMessage {
        request_id: request_id(),
        command,
    };
    let payload = serde_json::to_vec(&message)
        .map_err(|e| bad_input(&session, format!("the command could not be written: {e}")))?;
    publish(&shared, &session, topics.commands().to_owned(), payload).await?;
    tracing::info!(device_id = %id, command = name, request_id = %message.request_id, "console: command sent");
    Ok(Redirect::to(&format!(
        "/devices/{id}?sent={}",
        message.request_id
    )))
}

async fn publish(
    shared: &Shared,
    session: &Session,
    topic: String,
    payload: Vec<u8>,
) -> Result<(), Refusal> {
    shared
        .link
        .publish(topic, payload)
        .await
        .map_err(|m| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "Not sent", m).with(session))
}

async fn revoke(
    State(shared): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Fields,
) -> Result<Redirect, Refusal> {
    let fields = fields(form);
    let session = action_session(&shared, &headers, &fields)?;
    acorn_mqtt::check_device_id(&id).map_err(|_| not_found(&session, &id))?;
    if fields.get("confirm").map(|c| c.trim()) != Some(id.as_str()) {
        return Err(bad_input(
            &session,
            "Not revoked: type the device id exactly to confirm.".into(),
        ));
    }
    shared.admin.revoke(&id).await.map_err(|e| {
        let status = if e.code == "device_not_found" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Refusal::new(status, "Not revoked", e.message).with(&session)
    })?;
    tracing::info!(device_id = %id, "console: device revoked");
    Ok(Redirect::to(&format!("/devices/{id}?revoked")))
}

async fn live_page(State(shared): St, headers: HeaderMap) -> Result<Markup, PageError> {
    let session = page_session(&shared, &headers)?;
    Ok(live::render(&session, &shared.fleet.recent()))
}

/// Server-Sent Events: each press and status as it arrives (`event: press` / `status`),
/// until the page closes or the backend stops.
async fn events(State(shared): St, headers: HeaderMap) -> Response {
    if shared.sessions.get(&headers).is_none() {
        return Refusal::new(StatusCode::UNAUTHORIZED, "Not signed in", "Sign in first.")
            .into_response();
    }
    let receiver = shared.fleet.subscribe();
    let stream = futures_util::stream::unfold(receiver, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let sse = Event::default()
                        .event(event.kind())
                        .data(live::event_json(&event));
                    return Some((Ok::<_, Infallible>(sse), rx));
                }
                // A slow page misses events rather than holding the others back.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // The stream ends with the service, and within a few seconds of the session's end (a
    // sign-out in another tab, expiry), like any other page would.
    let (admin, sessions) = (shared.admin.clone(), Arc::clone(&shared.sessions));
    let ended = async move {
        let session_over = async {
            while sessions.get(&headers).is_some() {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        };
        tokio::select! {
            _ = admin.stopping() => {}
            _ = session_over => {}
        }
    };
    let stream = stream.take_until(Box::pin(ended));
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn tokens_page(State(shared): St, headers: HeaderMap) -> Result<Markup, PageError> {
    let session = page_session(&shared, &headers)?;
    let unused = shared
        .admin
        .unused_tokens()
        .await
        .map_err(|e| failed(&session, &e))?;
    Ok(tokens::render(&session, None, &unused))
}

async fn mint_token(
    State(shared): St,
    headers: HeaderMap,
    form: Fields,
) -> Result<Markup, Refusal> {
    let fields = fields(form);
    let session = action_session(&shared, &headers, &fields)?;
    let minutes = fields.get("ttlMinutes").map(|v| v.trim()).unwrap_or("60");
    let minutes: i64 = minutes.parse().map_err(|_| {
        bad_input(
            &session,
            format!("The lifetime must be a whole number of minutes, got {minutes:?}."),
        )
    })?;
    let device_id = fields
        .get("deviceId")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty());
    let minted = shared
        .admin
        .mint_token(minutes.saturating_mul(60), device_id)
        .await
        .map_err(|e| {
            let status = if e.code.starts_with("invalid") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            Refusal::new(status, "Not minted", e.message).with(&session)
        })?;
    let unused = shared
        .admin
        .unused_tokens()
        .await
        .map_err(|e| failed(&session, &e))?;
    let shown = tokens::Minted {
        token: secrecy::ExposeSecret::expose_secret(&minted.token).to_owned(),
        expires_at: minted.expires_at,
        device_id: device_id.map(str::to_owned),
    };
    Ok(tokens::render(&session, Some(&shown), &unused))
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/console.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../assets/console.js"),
    )
}
