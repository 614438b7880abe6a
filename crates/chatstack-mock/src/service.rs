//! The HTTP side: the axum router, its handlers, headers and error envelopes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use chatstack_proto::{ChatRequest, ProviderError};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::body::{
    ERROR_IN_200, MID_STREAM_ERROR, Oversized, PacedBody, Segment, Segments, SseOptions, SseScript,
    StreamMode, Trickle, with_invalid_utf8,
};
use crate::config::{MAX_REPLY_TOKENS, MockConfig};
use crate::counters::{Counters, InFlight};
use crate::fault::{Fault, ceil_secs};
use crate::headers;
use crate::reply::{self, PlanInput, ReplyPlan, UsageOverride};

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const PROCESSING_MS: HeaderName = HeaderName::from_static("openai-processing-ms");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
const LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
const REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
const RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html");
const GZIP: HeaderValue = HeaderValue::from_static("gzip");

/// The page of [`Fault::WrongContentType`]: what a captive portal or an authenticating proxy
/// answers instead of the API.
const SIGN_IN_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>Sign in</title></head>\n<body>\n<h1>Sign in to continue</h1>\n<form method=\"post\" action=\"/login\"><input name=\"user\"><input name=\"password\" type=\"password\"><button>Sign in</button></form>\n</body>\n</html>\n";

/// The body of [`Fault::Redirect`].
const REDIRECT_PAGE: &str = "<html>\r\n<head><title>307 Temporary Redirect</title></head>\r\n<body>\r\n<center><h1>307 Temporary Redirect</h1></center>\r\n</body>\r\n</html>\r\n";

/// The body of [`Fault::CorruptGzip`]: a valid gzip header (magic, deflate, no flags, no
/// time, unknown OS), then a first byte whose block type is the reserved 0b11, so any
/// inflater fails at once, then more junk.
const CORRUPT_GZIP: &[u8] =
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\xff\xfechatstack-mock: not deflate data\x00\x01\x02";

const WINDOW: Duration = Duration::from_secs(60);

/// Per-connection control, shared by the connection task and its requests.
#[derive(Default)]
pub(crate) struct ConnControl {
    reset: AtomicBool,
    notify: Notify,
}

impl ConnControl {
    /// Asks the connection task to drop the connection with a TCP reset.
    pub(crate) fn reset(&self) {
        self.reset.store(true, Relaxed);
        self.notify.notify_one();
    }

    /// Asks the connection task to close the connection (a plain close, FIN) at once,
    /// whatever it is doing.
    pub(crate) fn close(&self) {
        self.notify.notify_one();
    }

    /// Whether a reset was asked for.
    pub(crate) fn reset_requested(&self) -> bool {
        self.reset.load(Relaxed)
    }

    /// Resolves once a reset or a close was asked for.
    pub(crate) async fn drop_requested(&self) {
        self.notify.notified().await;
    }
}

/// The state every handler shares.
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) counters: Counters,
    fault_rng: Mutex<fastrand::Rng>,
    jitter_rng: Mutex<fastrand::Rng>,
    window: Mutex<RateWindow>,
    request_seq: AtomicU64,
    id_prefix: u64,
    created: u64,
    models_body: Bytes,
}

struct RateWindow {
    start: Instant,
    requests: u64,
    tokens: u64,
}

/// What the rate-limit headers of one response say.
#[derive(Debug, Clone, Copy)]
struct RateState {
    remaining_requests: u64,
    remaining_tokens: u64,
    reset: Duration,
    /// Set when enforcement refused the request: "requests" or "tokens".
    limited: Option<&'static str>,
}

impl Shared {
    pub(crate) fn new(config: MockConfig, counters: Counters) -> Self {
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        #[derive(Serialize)]
        struct ModelObject<'a> {
            id: &'a str,
            object: &'static str,
            created: u64,
            owned_by: &'static str,
        }
        #[derive(Serialize)]
        struct ModelList<'a> {
            object: &'static str,
            data: Vec<ModelObject<'a>>,
        }
        let list = ModelList {
            object: "list",
            data: config
                .models
                .iter()
                .map(|id| ModelObject {
                    id,
                    object: "model",
                    created,
                    owned_by: "chatstack-mock",
                })
                .collect(),
        };
        let models_body = Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
        Self {
            fault_rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            jitter_rng: Mutex::new(fastrand::Rng::with_seed(reply::splitmix64(config.seed))),
            window: Mutex::new(RateWindow {
                start: Instant::now(),
                requests: 0,
                tokens: 0,
            }),
            request_seq: AtomicU64::new(0),
            // Unique across servers (not seeded: request ids need not be reproducible).
            id_prefix: fastrand::u64(..),
            created,
            models_body,
            config,
            counters,
        }
    }

    fn request_id(&self) -> HeaderValue {
        let seq = self.request_seq.fetch_add(1, Relaxed);
        let id = format!("req_{:016x}{seq:016x}", self.id_prefix);
        HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("req_mock"))
    }

    /// The configured latency: fixed plus jitter from the seeded jitter RNG.
    fn latency(&self) -> Duration {
        let latency = self.config.latency;
        if latency.jitter.is_zero() {
            return latency.fixed;
        }
        let max = u64::try_from(latency.jitter.as_nanos()).unwrap_or(u64::MAX);
        let jitter = self
            .jitter_rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .u64(0..=max);
        latency.fixed.saturating_add(Duration::from_nanos(jitter))
    }

    /// Draws the configured fault rules, one number per rule, in order.
    fn draw_faults(&self, into: &mut Vec<Fault>) {
        if self.config.faults.is_empty() {
            return;
        }
        let mut rng = self
            .fault_rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for rule in &self.config.faults {
            if rng.f64() < rule.probability {
                into.push(rule.fault.clone());
            }
        }
    }

    /// Charges one request of `tokens` to the current window.
    fn take_rate(&self, tokens: u64) -> RateState {
        let limits = self.config.rate_limits;
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(window.start);
        if elapsed >= WINDOW {
            let windows = elapsed.as_secs() / WINDOW.as_secs();
            window.start += Duration::from_secs(windows * WINDOW.as_secs());
            window.requests = 0;
            window.tokens = 0;
        }
        let reset = WINDOW.saturating_sub(now.saturating_duration_since(window.start));
        let limited = if !limits.enforce {
            None
        } else if window.requests >= limits.requests_per_minute {
            Some("requests")
        } else if window.tokens.saturating_add(tokens) > limits.tokens_per_minute {
            Some("tokens")
        } else {
            None
        };
        if limited.is_none() {
            window.requests += 1;
            window.tokens = window.tokens.saturating_add(tokens);
        }
        RateState {
            remaining_requests: limits.requests_per_minute.saturating_sub(window.requests),
            remaining_tokens: limits.tokens_per_minute.saturating_sub(window.tokens),
            reset,
            limited,
        }
    }

    /// A 401 when a key is configured and the request does not carry it.
    fn auth_failure(&self, request_headers: &HeaderMap, ctx: &Ctx) -> Option<Response> {
        let key = self.config.api_key.as_ref()?;
        let provided = request_headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .get(..7)
                    .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
                    .map(|_| value[7..].trim())
            });
        let message = match provided {
            Some(provided) if provided == key => return None,
            Some(provided) => format!(
                "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                mask_key(provided)
            ),
            None => "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).".to_owned(),
        };
        Some(ctx.error(
            StatusCode::UNAUTHORIZED,
            envelope(
                message,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
        ))
    }
}

/// A key as OpenAI echoes it: never whole.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len().max(1));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat((chars.len() - 7).min(40)))
}

/// OpenAI's format of `x-ratelimit-reset-*`: `20ms`, `1.5s`, `6m0s`, `1h2m3s`.
pub(crate) fn format_reset(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let secs = duration.as_secs();
    let frac = duration.subsec_millis();
    let seconds = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        let text = format!("{}.{frac:03}", secs % 60);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (secs / 3600, (secs % 3600) / 60) {
        (0, 0) => seconds,
        (0, minutes) => format!("{minutes}m{seconds}"),
        (hours, minutes) => format!("{hours}h{minutes}m{seconds}"),
    }
}

/// An error envelope.
pub(crate) fn envelope(
    message: impl Into<String>,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> ProviderError {
    ProviderError {
        message: message.into(),
        kind: Some(kind.to_owned()),
        param: param.map(str::to_owned),
        code: code.map(str::to_owned),
    }
}

/// `{"error": {...}}`.
pub(crate) fn envelope_body(error: &ProviderError) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: &'a ProviderError,
    }
    Bytes::from(serde_json::to_vec(&Envelope { error }).unwrap_or_default())
}

/// What every response of one request shares: its id, start time, and rate-limit state.
struct Ctx {
    request_id: HeaderValue,
    started: Instant,
    rate: Option<RateState>,
    limits: (u64, u64),
}

impl Ctx {
    fn new(shared: &Shared) -> Self {
        let limits = shared.config.rate_limits;
        Self {
            request_id: shared.request_id(),
            started: Instant::now(),
            rate: None,
            limits: (limits.requests_per_minute, limits.tokens_per_minute),
        }
    }

    fn respond(&self, status: StatusCode, content_type: HeaderValue, body: Body) -> Response {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        if status.canonical_reason().is_none() {
            // hyper writes "<none>" for a status it has no reason phrase for; real servers
            // (and Anthropic's 529) send an empty one.
            response
                .extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b""));
        }
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, content_type);
        headers.insert(X_REQUEST_ID, self.request_id.clone());
        let elapsed = self.started.elapsed().as_millis();
        headers.insert(
            PROCESSING_MS,
            HeaderValue::from(u64::try_from(elapsed).unwrap_or(u64::MAX)),
        );
        if let Some(rate) = &self.rate {
            headers.insert(LIMIT_REQUESTS, HeaderValue::from(self.limits.0));
            headers.insert(LIMIT_TOKENS, HeaderValue::from(self.limits.1));
            headers.insert(
                REMAINING_REQUESTS,
                HeaderValue::from(rate.remaining_requests),
            );
            headers.insert(REMAINING_TOKENS, HeaderValue::from(rate.remaining_tokens));
            let reset = header_text(format_reset(rate.reset));
            headers.insert(RESET_REQUESTS, reset.clone());
            headers.insert(RESET_TOKENS, reset);
        }
        response
    }

    fn error(&self, status: StatusCode, error: ProviderError) -> Response {
        self.respond(status, JSON, Body::from(envelope_body(&error)))
    }

    fn bad_request(&self, message: impl Into<String>, param: Option<&str>) -> Response {
        self.error(
            StatusCode::BAD_REQUEST,
            envelope(message, "invalid_request_error", param, None),
        )
    }

    /// A 429 `rate_limit_exceeded` with the remaining counts at zero and the reset at `wait`.
    fn rate_limited(&mut self, model: &str, kind: &str, wait: Duration) -> Response {
        self.rate = Some(RateState {
            remaining_requests: 0,
            remaining_tokens: 0,
            reset: wait,
            limited: None,
        });
        let (limit, unit) = if kind == "tokens" {
            (self.limits.1, "tokens per min (TPM)")
        } else {
            (self.limits.0, "requests per min (RPM)")
        };
        let message = format!(
            "Rate limit reached for {model} in organization org-chatstack-mock on {unit}: Limit {limit}, Used {limit}, Requested 1. Please try again in {}.",
            format_reset(wait)
        );
        self.error(
            StatusCode::TOO_MANY_REQUESTS,
            envelope(message, kind, None, Some("rate_limit_exceeded")),
        )
    }
}

fn header_text(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or(HeaderValue::from_static("0"))
}

/// Per-request instructions from `x-mock-*` headers.
#[derive(Default)]
struct Directives {
    faults: Vec<Fault>,
    reply_tokens: Option<u32>,
    latency: Option<Duration>,
    usage: Option<UsageOverride>,
}

/// A header's text, or a 400 naming it.
fn header_str<'a>(
    name: &'static str,
    value: &'a HeaderValue,
) -> Result<&'a str, (String, &'static str)> {
    value
        .to_str()
        .map_err(|_| (format!("{name} must be visible ASCII"), name))
}

impl Directives {
    fn parse(request_headers: &HeaderMap) -> Result<Self, (String, &'static str)> {
        let mut directives = Self::default();
        for value in request_headers.get_all(headers::FAULT) {
            let faults = Fault::parse_list(header_str(headers::FAULT, value)?)
                .map_err(|error| (format!("{}: {error}", headers::FAULT), headers::FAULT))?;
            directives.faults.extend(faults);
        }
        if let Some(value) = request_headers.get(headers::REPLY_TOKENS) {
            let tokens = header_str(headers::REPLY_TOKENS, value)?
                .trim()
                .parse::<u32>()
                .map_err(|_| {
                    (
                        format!("{} must be a non-negative integer", headers::REPLY_TOKENS),
                        headers::REPLY_TOKENS,
                    )
                })?;
            directives.reply_tokens = Some(tokens.min(MAX_REPLY_TOKENS));
        }
        if let Some(value) = request_headers.get(headers::LATENCY_MS) {
            let millis = header_str(headers::LATENCY_MS, value)?
                .trim()
                .parse::<u64>()
                .map_err(|_| {
                    (
                        format!("{} must be a non-negative integer", headers::LATENCY_MS),
                        headers::LATENCY_MS,
                    )
                })?;
            directives.latency = Some(Duration::from_millis(millis));
        }
        if let Some(value) = request_headers.get(headers::USAGE) {
            let usage = serde_json::from_slice(value.as_bytes()).map_err(|error| {
                (
                    format!("{} is not a usage object: {error}", headers::USAGE),
                    headers::USAGE,
                )
            })?;
            directives.usage = Some(usage);
        }
        Ok(directives)
    }
}

/// Builds the router: the endpoints, the fallbacks, and the tower-http layers.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_request_body;
    Router::new()
        .route(
            "/v1/chat/completions",
            post(chat_completions).fallback(method_not_allowed),
        )
        .route("/v1/models", get(list_models).fallback(method_not_allowed))
        .route(
            "/v1/models/{*id}",
            get(get_model).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(limit))
        .layer(
            // Everything at DEBUG: injected 5xx are the point of the mock, not errors to log.
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            HeaderName::from_static("api-key"),
            HeaderName::from_static("x-api-key"),
        ]))
        .with_state(shared)
}

/// Replaces tower-http's plain-text 413 with the OpenAI envelope.
pub(crate) fn envelope_413(response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE
        || response.headers().get(CONTENT_TYPE) == Some(&JSON)
    {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(CONTENT_TYPE, JSON);
    parts.headers.remove(CONTENT_LENGTH);
    let body = envelope_body(&too_large());
    Response::from_parts(parts, Body::from(body))
}

fn too_large() -> ProviderError {
    envelope(
        "The request body is larger than this server accepts.",
        "invalid_request_error",
        None,
        Some("request_too_large"),
    )
}

async fn not_found(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    let ctx = Ctx::new(&shared);
    ctx.error(
        StatusCode::NOT_FOUND,
        envelope(
            format!("Invalid URL ({method} {})", uri.path()),
            "invalid_request_error",
            None,
            None,
        ),
    )
}

async fn method_not_allowed(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
) -> Response {
    let ctx = Ctx::new(&shared);
    ctx.error(
        StatusCode::METHOD_NOT_ALLOWED,
        envelope(
            format!("Method not allowed ({method} {})", uri.path()),
            "invalid_request_error",
            None,
            None,
        ),
    )
}

async fn list_models(State(shared): State<Arc<Shared>>, request_headers: HeaderMap) -> Response {
    let ctx = Ctx::new(&shared);
    if let Some(response) = shared.auth_failure(&request_headers, &ctx) {
        return response;
    }
    ctx.respond(StatusCode::OK, JSON, Body::from(shared.models_body.clone()))
}

async fn get_model(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    request_headers: HeaderMap,
) -> Response {
    let ctx = Ctx::new(&shared);
    if let Some(response) = shared.auth_failure(&request_headers, &ctx) {
        return response;
    }
    let id = uri.path().strip_prefix("/v1/models/").unwrap_or_default();
    if !shared.config.models.iter().any(|model| model == id) {
        return ctx.error(
            StatusCode::NOT_FOUND,
            envelope(
                format!("The model `{id}` does not exist or you do not have access to it."),
                "invalid_request_error",
                None,
                Some("model_not_found"),
            ),
        );
    }
    let body = serde_json::json!({
        "id": id, "object": "model", "created": shared.created, "owned_by": "chatstack-mock"
    });
    ctx.respond(StatusCode::OK, JSON, Body::from(body.to_string()))
}

/// Whether an error (or one of its sources) is a body over the size limit.
fn is_too_large(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// `POST /v1/chat/completions`.
async fn chat_completions(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let guard = shared.counters.request_guard();
    let mut ctx = Ctx::new(&shared);
    let (parts, body) = request.into_parts();
    if let Some(response) = shared.auth_failure(&parts.headers, &ctx) {
        return response;
    }
    let directives = match Directives::parse(&parts.headers) {
        Ok(directives) => directives,
        Err((message, param)) => return ctx.bad_request(message, Some(param)),
    };
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) if is_too_large(&error) => {
            return ctx.error(StatusCode::PAYLOAD_TOO_LARGE, too_large());
        }
        Err(error) => {
            return ctx.bad_request(format!("Could not read the request body: {error}"), None);
        }
    };
    let request: ChatRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(error) => {
            return ctx.bad_request(
                format!(
                    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload with a model and messages.) Details: {error}"
                ),
                None,
            );
        }
    };
    drop(bytes);
    if request.model.is_empty() {
        return ctx.bad_request("you must provide a model parameter", Some("model"));
    }
    if request.messages.is_empty() {
        return ctx.bad_request("[] is too short - 'messages'", Some("messages"));
    }
    shared.counters.count_model(&request.model);

    let mut faults = directives.faults;
    shared.draw_faults(&mut faults);
    let mut delay = directives.latency.unwrap_or_else(|| shared.latency());
    let mut first_chunk_delay = Duration::ZERO;
    let mut outcome = None;
    for fault in &faults {
        if let Fault::Redirect { location } = fault {
            if is_at(&parts, location) {
                // Following the redirect ended here.
                continue;
            }
        }
        match fault {
            Fault::Latency(extra) => delay = delay.saturating_add(*extra),
            Fault::SlowFirstChunk(extra) => {
                first_chunk_delay = first_chunk_delay.saturating_add(*extra);
            }
            // The first fault that decides the answer wins; the others drawn are not
            // injected, so not counted.
            _ if outcome.is_some() => continue,
            other => outcome = Some(other.clone()),
        }
        shared.counters.count_fault(fault);
    }

    let config = &shared.config;
    let reply_tokens = directives.reply_tokens.unwrap_or(config.reply_tokens);
    let prompt_tokens = request.estimate_prompt_tokens();
    let plan = match reply::plan(
        &request,
        &PlanInput {
            reply_tokens,
            max_choices: config.max_choices,
            created: shared.created,
            prompt_tokens,
            usage: directives.usage.as_ref(),
        },
    ) {
        Ok(plan) => plan,
        Err(error) => return ctx.bad_request(error.message, Some(error.param)),
    };
    let choices = plan.choices.len() as u64;
    let requested_output = request
        .max_output_tokens()
        .unwrap_or_else(|| u64::from(reply_tokens) * choices);
    let rate = shared.take_rate(prompt_tokens.saturating_add(requested_output));
    ctx.rate = Some(rate);

    let streaming = request.stream == Some(true);
    let content_chunks = SseScript::content_chunks(&plan);
    if !streaming {
        delay = delay.saturating_add(first_chunk_delay);
        if outcome.is_none() {
            // A unary reply takes as long to "generate" as its stream would.
            delay = delay.saturating_add(config.token_interval.saturating_mul(content_chunks));
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    if let Some(window) = config.context_window {
        let wanted = prompt_tokens.saturating_add(request.max_output_tokens().unwrap_or(0));
        if wanted > window {
            return context_length_exceeded(&ctx, window, prompt_tokens, wanted);
        }
    }
    if let Some(kind) = rate.limited {
        let mut response = ctx.rate_limited(&request.model, kind, rate.reset);
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(ceil_secs(rate.reset)));
        return response;
    }

    let Some(outcome) = outcome else {
        return reply(
            &shared,
            &ctx,
            plan,
            &request,
            streaming,
            first_chunk_delay,
            guard,
            StreamMode::Normal,
        );
    };
    let model = request.model.as_str();
    match outcome {
        Fault::RateLimit { retry_after } => {
            let mut response = ctx.rate_limited(model, "requests", retry_after);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(ceil_secs(retry_after)));
            response
        }
        Fault::RateLimitDate { retry_after } => {
            let mut response = ctx.rate_limited(model, "requests", retry_after);
            // HTTP dates end at year 9999: a year ahead is plenty for a test.
            let wait = retry_after.min(Duration::from_secs(365 * 86_400));
            let date = httpdate::fmt_http_date(SystemTime::now() + wait);
            response.headers_mut().insert(RETRY_AFTER, header_text(date));
            response
        }
        Fault::RateLimitMs { retry_after } => {
            let mut response = ctx.rate_limited(model, "requests", retry_after);
            let millis = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
            response
                .headers_mut()
                .insert(RETRY_AFTER_MS, HeaderValue::from(millis));
            response
        }
        Fault::InsufficientQuota => ctx.error(
            StatusCode::TOO_MANY_REQUESTS,
            envelope(
                "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                None,
                Some("insufficient_quota"),
            ),
        ),
        Fault::ServerError => ctx.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            envelope(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                None,
            ),
        ),
        Fault::BadGateway => ctx.respond(
            StatusCode::BAD_GATEWAY,
            HTML,
            Body::from(
                "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>chatstack-mock</center>\r\n</body>\r\n</html>\r\n",
            ),
        ),
        Fault::ServiceUnavailable => ctx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            envelope(
                "The engine is currently overloaded, please try again later.",
                "server_error",
                None,
                None,
            ),
        ),
        Fault::Overloaded => ctx.error(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            envelope("Overloaded", "overloaded_error", None, None),
        ),
        Fault::Unauthorized => ctx.error(
            StatusCode::UNAUTHORIZED,
            envelope(
                "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
        ),
        Fault::ContextLengthExceeded => {
            let window = config.context_window.unwrap_or(128_000);
            context_length_exceeded(&ctx, window, prompt_tokens, window.saturating_add(1))
        }
        Fault::Reset => {
            shared.counters.count_reset();
            drop_connection(&ctx, &parts.extensions, ConnControl::reset).await
        }
        Fault::NoAnswer => {
            tokio::time::sleep(config.stall_cap).await;
            drop_connection(&ctx, &parts.extensions, ConnControl::close).await
        }
        Fault::Truncated if streaming => {
            let after = content_chunks / 2;
            reply(&shared, &ctx, plan, &request, true, first_chunk_delay, guard, StreamMode::Truncate { after })
        }
        Fault::Truncated => {
            let full = unary_bytes(&plan);
            let half = full.slice(..full.len() / 2);
            paced(&ctx, JSON, Some(full.len() as u64), Segments::new([Segment::Data(half), Segment::Abort]), guard, None)
        }
        Fault::Stall { after_chunks } if streaming => {
            let mode = StreamMode::Stall { after: after_chunks, cap: config.stall_cap };
            reply(&shared, &ctx, plan, &request, true, first_chunk_delay, guard, mode)
        }
        Fault::Stall { .. } => {
            let length = unary_bytes(&plan).len() as u64;
            let script = Segments::new([Segment::Pause(config.stall_cap), Segment::Abort]);
            paced(&ctx, JSON, Some(length), script, guard, None)
        }
        Fault::MidStreamError { after_chunks } if streaming => {
            let mode = StreamMode::MidStreamError { after: after_chunks };
            reply(&shared, &ctx, plan, &request, true, first_chunk_delay, guard, mode)
        }
        Fault::MidStreamError { .. } => {
            ctx.respond(StatusCode::OK, JSON, Body::from(MID_STREAM_ERROR))
        }
        Fault::MalformedJson if streaming => {
            reply(&shared, &ctx, plan, &request, true, first_chunk_delay, guard, StreamMode::Malformed)
        }
        Fault::MalformedJson => {
            let full = unary_bytes(&plan);
            ctx.respond(StatusCode::OK, JSON, Body::from(full.slice(..full.len() * 3 / 5)))
        }
        Fault::Oversized { bytes } => oversized(&shared, &ctx, &plan, streaming, bytes, guard),
        Fault::WrongContentType => ctx.respond(StatusCode::OK, HTML, Body::from(SIGN_IN_PAGE)),
        Fault::InvalidUtf8 { chunk } if streaming => {
            let mode = StreamMode::InvalidUtf8 { chunk };
            reply(&shared, &ctx, plan, &request, true, first_chunk_delay, guard, mode)
        }
        Fault::InvalidUtf8 { .. } => {
            ctx.respond(StatusCode::OK, JSON, Body::from(with_invalid_utf8(&unary_bytes(&plan))))
        }
        Fault::ErrorIn200 if streaming => {
            let event = Bytes::from(format!("data: {ERROR_IN_200}\n\n"));
            let script = Segments::new([Segment::Data(event)]);
            paced(&ctx, EVENT_STREAM, None, script, guard, Some(shared.counters.stream_guard()))
        }
        Fault::ErrorIn200 => ctx.respond(StatusCode::OK, JSON, Body::from(ERROR_IN_200)),
        Fault::CorruptGzip => {
            let content_type = if streaming { EVENT_STREAM } else { JSON };
            let mut response = ctx.respond(StatusCode::OK, content_type, Body::from(CORRUPT_GZIP));
            response.headers_mut().insert(CONTENT_ENCODING, GZIP);
            response
        }
        Fault::Drip { interval } if streaming => {
            let mode = StreamMode::Drip { interval, cap: config.stall_cap };
            reply(&shared, &ctx, plan, &request, true, first_chunk_delay, guard, mode)
        }
        Fault::Drip { interval } => {
            paced(&ctx, JSON, None, Trickle::new(interval, config.stall_cap), guard, None)
        }
        Fault::Redirect { location } => match HeaderValue::try_from(location) {
            Ok(location) => {
                let mut response =
                    ctx.respond(StatusCode::TEMPORARY_REDIRECT, HTML, Body::from(REDIRECT_PAGE));
                response.headers_mut().insert(LOCATION, location);
                response
            }
            // Only a `Fault` built by hand (not parsed) can get here.
            Err(_) => ctx.bad_request(
                "the redirect location is not a valid header value",
                Some(headers::FAULT),
            ),
        },
        // Delays were handled above.
        Fault::Latency(_) | Fault::SlowFirstChunk(_) => {
            reply(&shared, &ctx, plan, &request, streaming, first_chunk_delay, guard, StreamMode::Normal)
        }
    }
}

/// Whether the request is at `location` already: its path and query, and for an absolute
/// location also `http://` and its host, are the location's.
fn is_at(parts: &http::request::Parts, location: &str) -> bool {
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    if location.starts_with('/') {
        return location == path;
    }
    // HTTP/2 carries the host in the URI (`:authority`), HTTP/1.1 in the `host` header.
    let host = parts
        .uri
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|host| host.to_str().ok())
        });
    host.is_some_and(|host| {
        location
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_prefix(host))
            == Some(path)
    })
}

/// Has the connection task drop this request's connection (`how`: reset or close), and never
/// answers: dropping the connection drops this future too.
async fn drop_connection(
    ctx: &Ctx,
    extensions: &http::Extensions,
    how: fn(&ConnControl),
) -> Response {
    match extensions.get::<Arc<ConnControl>>() {
        Some(control) => {
            how(control);
            std::future::pending::<Response>().await
        }
        // Not served by our accept loop (cannot happen): a 500 beats hanging forever.
        None => ctx.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            envelope("connection control unavailable", "server_error", None, None),
        ),
    }
}

fn context_length_exceeded(ctx: &Ctx, window: u64, prompt: u64, wanted: u64) -> Response {
    let completion = wanted.saturating_sub(prompt);
    ctx.error(
        StatusCode::BAD_REQUEST,
        envelope(
            format!(
                "This model's maximum context length is {window} tokens. However, you requested {wanted} tokens ({prompt} in the messages, {completion} in the completion). Please reduce the length of the messages or completion."
            ),
            "invalid_request_error",
            Some("messages"),
            Some("context_length_exceeded"),
        ),
    )
}

fn unary_bytes(plan: &ReplyPlan) -> Bytes {
    Bytes::from(serde_json::to_vec(&reply::unary_response(plan)).unwrap_or_default())
}

/// A normal reply, unary or streamed (then possibly with a fault mode).
#[allow(clippy::too_many_arguments)]
fn reply(
    shared: &Shared,
    ctx: &Ctx,
    plan: ReplyPlan,
    request: &ChatRequest,
    streaming: bool,
    first_delay: Duration,
    guard: InFlight,
    mode: StreamMode,
) -> Response {
    if !streaming {
        return ctx.respond(StatusCode::OK, JSON, Body::from(unary_bytes(&plan)));
    }
    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|options| options.include_usage)
        .unwrap_or(false);
    let script = SseScript::new(
        plan,
        SseOptions {
            mode,
            include_usage,
            first_delay,
            token_interval: shared.config.token_interval,
        },
    );
    let stream_guard = shared.counters.stream_guard();
    paced(ctx, EVENT_STREAM, None, script, guard, Some(stream_guard))
}

/// A response whose body a script writes over time.
fn paced<S: crate::body::Script>(
    ctx: &Ctx,
    content_type: HeaderValue,
    content_length: Option<u64>,
    script: S,
    guard: InFlight,
    stream_guard: Option<InFlight>,
) -> Response {
    let body = Body::from_stream(PacedBody::new(script, Some(guard), stream_guard));
    let mut response = ctx.respond(StatusCode::OK, content_type, body);
    if let Some(length) = content_length {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// A 200 of `bytes` bytes: one huge completion (unary) or one huge chunk event (stream).
fn oversized(
    shared: &Shared,
    ctx: &Ctx,
    plan: &ReplyPlan,
    streaming: bool,
    bytes: u64,
    guard: InFlight,
) -> Response {
    let head = format!(
        r#""id":"{}","created":{},"model":{},"system_fingerprint":"{}","#,
        plan.id,
        plan.created,
        serde_json::Value::from(plan.model.as_str()),
        reply::FINGERPRINT
    );
    if streaming {
        let prefix = format!(
            r#"data: {{"object":"chat.completion.chunk",{head}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""#
        );
        let suffix = "\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let script = Oversized::new(
            Bytes::from(prefix),
            Bytes::from_static(suffix.as_bytes()),
            bytes,
        );
        let stream_guard = shared.counters.stream_guard();
        paced(ctx, EVENT_STREAM, None, script, guard, Some(stream_guard))
    } else {
        let prefix = format!(
            r#"{{"object":"chat.completion",{head}"choices":[{{"index":0,"message":{{"role":"assistant","content":""#
        );
        let suffix = r#""},"finish_reason":"stop"}]}"#;
        let script = Oversized::new(
            Bytes::from(prefix),
            Bytes::from_static(suffix.as_bytes()),
            bytes,
        );
        let length = script.len();
        paced(ctx, JSON, Some(length), script, guard, None)
    }
}

#[cfg(test)]
mod tests {
    use chatstack_proto::parse_reset_duration;

    use super::*;

    #[test]
    fn reset_format_is_openai_like_and_parses() {
        for (duration, text) in [
            (Duration::from_millis(20), "20ms"),
            (Duration::ZERO, "0ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(59_999), "59.999s"),
            (Duration::from_secs(360), "6m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
        ] {
            assert_eq!(format_reset(duration), text);
            assert_eq!(parse_reset_duration(text), Some(duration), "{text}");
        }
    }

    #[test]
    fn keys_are_masked() {
        let masked = mask_key("sk-proj-abcdefghijklmnop");
        assert!(masked.starts_with("sk-") && masked.ends_with("mnop"));
        assert!(!masked.contains("abcdefghijkl"));
        assert_eq!(mask_key("short"), "*****");
        assert_eq!(mask_key(""), "*");
    }
}
