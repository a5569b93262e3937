//! A JSON route's answer as the tests read it: the status and the parsed body.

use serde_json::Value;

/// A handler answer with its JSON body parsed.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl From<http::Response<String>> for Reply {
    fn from(resp: http::Response<String>) -> Self {
        let status = resp.status().as_u16();
        let body = serde_json::from_str(resp.body())
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", resp.body()));
        Reply { status, body }
    }
}

impl Reply {
    pub fn str(&self, key: &str) -> &str {
        self.body[key]
            .as_str()
            .unwrap_or_else(|| panic!("no string {key:?} in {}", self.body))
    }
    pub fn count(&self, key: &str) -> u64 {
        self.body[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no count {key:?} in {}", self.body))
    }
}
