//! What the examples share: where their requests go.
//!
//! By default, chatstack's built-in mock provider on a loopback port (no key, no cost);
//! with `OPENAI_API_KEY` set, the real endpoint (`OPENAI_BASE_URL`, else OpenAI's, and
//! `CHATSTACK_MODEL`, else `gpt-4.1-mini`). The examples' tests pass [`Target::Mock`]
//! explicitly, so they never read the environment.
#![allow(dead_code)] // each example uses its own part of this module

use chatstack::API_KEY_VAR;
use chatstack::BASE_URL_VAR;
use chatstack::middleware::auth::ApiKey;
use chatstack_mock::{MockConfig, MockServer};

/// The key the mock is started with (and the examples send to it).
pub const MOCK_KEY: &str = "sk-mock-examples-0000";

/// OpenAI's API, when `OPENAI_BASE_URL` is not set.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// Where to send requests.
#[derive(Debug, Clone)]
pub enum Target {
    /// A mock provider started by the example.
    Mock,
    /// A real OpenAI-compatible endpoint.
    Real {
        /// The base URL, up to and including `/v1`.
        base_url: String,
        /// The API key.
        api_key: String,
        /// The model to use where the example needs one.
        model: String,
    },
}

impl Target {
    /// [`Target::Real`] when `OPENAI_API_KEY` is set and not blank, else [`Target::Mock`].
    pub fn from_env() -> Self {
        let key = std::env::var(API_KEY_VAR).unwrap_or_default();
        let key = key.trim();
        if key.is_empty() {
            return Self::Mock;
        }
        let base_url = std::env::var(BASE_URL_VAR)
            .ok()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| OPENAI_BASE_URL.to_owned());
        let model = std::env::var("CHATSTACK_MODEL").unwrap_or_else(|_| "gpt-4.1-mini".into());
        Self::Real {
            base_url,
            api_key: key.to_owned(),
            model,
        }
    }

    /// Starts the mock (configured by `mock`, with [`MOCK_KEY`]) if this is
    /// [`Target::Mock`], and says where requests go.
    pub async fn connect(self, mock: MockConfig) -> std::io::Result<Upstream> {
        match self {
            Self::Mock => {
                let server = MockServer::start(mock.api_key(MOCK_KEY)).await?;
                eprintln!(
                    "OPENAI_API_KEY is not set: using the built-in mock at {}",
                    server.url()
                );
                Ok(Upstream {
                    base_url: server.url().to_owned(),
                    api_key: MOCK_KEY.to_owned(),
                    model: "gpt-4.1".to_owned(),
                    mock: Some(server),
                })
            }
            Self::Real {
                base_url,
                api_key,
                model,
            } => {
                eprintln!("using {base_url} (OPENAI_API_KEY is set)");
                Ok(Upstream {
                    base_url,
                    api_key,
                    model,
                    mock: None,
                })
            }
        }
    }
}

/// Where requests go, and the mock behind it if there is one (kept alive with this value).
#[derive(Debug)]
pub struct Upstream {
    /// The base URL, up to and including `/v1`.
    pub base_url: String,
    /// The API key.
    pub api_key: String,
    /// The model to use where the example needs one.
    pub model: String,
    /// The mock, when requests go to one.
    pub mock: Option<MockServer>,
}

impl Upstream {
    /// The key, held as a secret.
    pub fn key(&self) -> Result<ApiKey, chatstack::Error> {
        ApiKey::new(self.api_key.clone())
    }

    /// Whether requests go to the mock.
    pub fn is_mock(&self) -> bool {
        self.mock.is_some()
    }
}
