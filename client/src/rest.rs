//! The REST client: `/v1` classify and detect (raw image body or multipart), model listing,
//! `/v2/health/*` and the `/metrics` text.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use reqwest::{Client, RequestBuilder, Response};

use crate::images::content_type;
use crate::target::{Health, ModelSummary};
use crate::tls::TlsMaterial;
use crate::types::{InferResponse, Params, Task, Timed};
use crate::ClientError;

#[derive(Clone, Debug)]
pub struct RestClient {
    base: String,
    http: Client,
    api_key: Option<String>,
    timeout: Duration,
    /// Send images as multipart/form-data even when there is only one (else a raw body).
    multipart: bool,
}

impl RestClient {
    /// `base` is the server's HTTP address, e.g. `http://127.0.0.1:8000`. Connections are kept
    /// alive and reused: a load test measures the server, not TCP handshakes.
    pub(crate) fn new(
        base: &str,
        api_key: Option<String>,
        timeout: Duration,
        multipart: bool,
        tls: &TlsMaterial,
    ) -> Result<Self, ClientError> {
        let base = normalize_base(base)?;
        let builder = Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true);
        let http = tls
            .apply_rest(builder)?
            .build()
            .map_err(|e| ClientError::Input(format!("cannot build the HTTP client: {e}")))?;
        Ok(RestClient { base, http, api_key, timeout, multipart })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn send(&self, url: &str, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| ClientError::from_reqwest(url, self.timeout, &e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(ClientError::from_http(status.as_u16(), status.canonical_reason().unwrap_or(""), &body))
    }

    async fn body_text(&self, url: &str, response: Response) -> Result<String, ClientError> {
        response.text().await.map_err(|e| ClientError::from_reqwest(url, self.timeout, &e))
    }

    /// `POST /v1/models/{model}/{classify|detect}` with `images`; latency is measured from just
    /// before sending to the last byte of the response.
    pub async fn infer(
        &self,
        task: Task,
        model: &str,
        images: &[Bytes],
        params: &Params,
    ) -> Result<Timed<InferResponse>, ClientError> {
        if images.is_empty() {
            return Err(ClientError::Input("no images to send".into()));
        }
        let url = self.url(&format!("/v1/models/{model}/{}", task.endpoint()));
        let mut request = self.authorized(self.http.post(&url)).query(&params.query(task));
        request = if images.len() == 1 && !self.multipart {
            request.header(reqwest::header::CONTENT_TYPE, content_type(&images[0])).body(images[0].clone())
        } else {
            request.multipart(multipart_form(images)?)
        };
        let started = Instant::now();
        let response = self.send(&url, request).await?;
        let text = self.body_text(&url, response).await?;
        let latency = started.elapsed();
        let value: InferResponse = serde_json::from_str(&text)
            .map_err(|e| ClientError::Protocol(format!("unexpected response from {url} ({e}): {text:.300}")))?;
        if value.results.len() != images.len() {
            return Err(ClientError::Protocol(format!(
                "{url} answered {} results for {} images",
                value.results.len(),
                images.len()
            )));
        }
        Ok(Timed { value, latency })
    }

    /// `GET /v1/models`.
    pub async fn models(&self) -> Result<Vec<ModelSummary>, ClientError> {
        let url = self.url("/v1/models");
        let response = self.send(&url, self.http.get(&url)).await?;
        let text = self.body_text(&url, response).await?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ClientError::Protocol(format!("{url} did not answer JSON ({e}): {text:.300}")))?;
        let models = value["models"]
            .as_array()
            .ok_or_else(|| ClientError::Protocol(format!("{url}: no `models` list in {text:.300}")))?;
        models.iter().map(ModelSummary::from_rest).collect()
    }

    /// `GET /v2/health/live` and `/v2/health/ready`: 200 means yes, any other status no.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let mut flags = [false; 2];
        for (flag, path) in flags.iter_mut().zip(["/v2/health/live", "/v2/health/ready"]) {
            let url = self.url(path);
            let response =
                self.http.get(&url).send().await.map_err(|e| ClientError::from_reqwest(&url, self.timeout, &e))?;
            *flag = response.status().is_success();
        }
        Ok(Health { live: flags[0], ready: flags[1] })
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let url = self.url("/metrics");
        let response = self.send(&url, self.http.get(&url)).await?;
        self.body_text(&url, response).await
    }
}

fn multipart_form(images: &[Bytes]) -> Result<Form, ClientError> {
    let mut form = Form::new();
    for (i, image) in images.iter().enumerate() {
        let mime = content_type(image);
        let extension = mime.rsplit('/').next().unwrap_or("bin");
        let part = Part::stream(image.clone())
            .file_name(format!("image-{i}.{extension}"))
            .mime_str(mime)
            .map_err(|e| ClientError::Input(format!("bad media type {mime}: {e}")))?;
        form = form.part("image", part);
    }
    Ok(form)
}

/// `host:port` -> `http://host:port`; trailing slashes dropped; only http(s) URLs.
pub fn normalize_base(url: &str) -> Result<String, ClientError> {
    let url = url.trim();
    let full = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
    let full = full.trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&full).map_err(|e| ClientError::Input(format!("bad URL `{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ClientError::Input(format!("bad URL `{url}`: expected http://HOST:PORT or https://HOST:PORT")));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        assert_eq!(normalize_base("127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(normalize_base("http://h:1/").unwrap(), "http://h:1");
        assert!(normalize_base("ftp://h:1").is_err());
        assert!(normalize_base("http://").is_err());
    }

    #[test]
    fn query_has_only_the_tasks_parameters() {
        let params = Params {
            top_k: Some(3),
            score_threshold: Some(0.5),
            classes: vec![1, 2],
            server_timeout_ms: Some(250),
            ..Params::default()
        };
        let q = params.query(Task::Classify);
        assert_eq!(q, vec![("top_k", "3".to_string()), ("classes", "1,2".to_string()), ("timeout", "250".to_string())]);
        let q = params.query(Task::Detect);
        assert_eq!(q[0], ("score_threshold", "0.5".to_string()));
        assert!(!q.iter().any(|(k, _)| *k == "top_k"));
    }
}
