//! `cloud`: where the local host runs, from the instance metadata services of
//! AWS, GCP and Azure, added to every local Resource.
//!
//! Detection asks every configured provider at once, each on its own
//! background thread with a time limit per request, and the first provider
//! in the configured order that answered wins. The pipeline never waits:
//! until detection finishes (and for good on a host where no provider
//! answers) flows get only the values configured under `set`, and the
//! location counts as unknown. Results are cached for the life of the
//! process: every `cloud` processor with the same detectors, endpoints and
//! timeout shares one detection.
//!
//! What is asked, per provider (facts from the providers' documentation):
//! - AWS (IMDSv2): `PUT /latest/api/token` with
//!   `X-aws-ec2-metadata-token-ttl-seconds`, then
//!   `GET /latest/dynamic/instance-identity/document` with
//!   `X-aws-ec2-metadata-token`: `region`, `availabilityZone`, `accountId`,
//!   `instanceId`. Platform `aws_ec2`.
//! - GCP: `GET /computeMetadata/v1/instance/zone`, `.../project/project-id`,
//!   `.../instance/id` with `Metadata-Flavor: Google`; the answer must carry
//!   the same header. The zone is the last part of
//!   `projects/<n>/zones/<zone>`, the region the zone without its last
//!   `-<letter>`. Platform `gcp_compute_engine`.
//! - Azure: `GET /metadata/instance/compute?api-version=2021-02-01` with
//!   `Metadata: true`: `location`, `zone`, `subscriptionId`, `vmId`.
//!   Platform `azure.vm` (the registry renamed `azure_vm`; values are the
//!   registry's, v1.44.0).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowscope_model::names::{resource, value};
use flowscope_model::{Attrs, Flow};
use flowscope_otel_config::processors::{
    CloudAttributes, CloudEndpoints, CloudProcessorConfig, CloudProviderName,
};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Why one provider's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not answer as a {provider} metadata server ({why})")]
    NotProvider {
        url: String,
        provider: &'static str,
        why: &'static str,
    },
    #[error("{url} answered a document that is not the expected JSON")]
    Json {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Why a metadata request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("the request could not be built")]
    Request(#[source] http::Error),
    #[error("the request could not be sent")]
    Send(#[source] hyper_util::client::legacy::Error),
    #[error("the answer could not be read (or is over {MAX_BODY} bytes)")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the answer is not UTF-8")]
    Utf8(#[source] std::string::FromUtf8Error),
}

/// The largest metadata document read.
const MAX_BODY: usize = 64 * 1024;

/// The HTTP/1.1 client of the metadata services: hyper over plain TCP, the
/// stack the exporters and the `kubernetes` processor use. It follows no
/// redirect and uses no proxy (metadata services are link-local).
type MetadataClient = HyperClient<HttpConnector, Empty<Bytes>>;

/// What detection found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudInfo {
    pub provider: Option<String>,
    pub platform: Option<String>,
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub account_id: Option<String>,
    pub host_id: Option<String>,
}

impl CloudInfo {
    /// `other`'s values where it has them, else ours.
    fn overridden_by(mut self, other: &CloudAttributes) -> Self {
        let pick = |mine: &mut Option<String>, theirs: &Option<String>| {
            if let Some(v) = theirs {
                *mine = Some(v.clone());
            }
        };
        pick(&mut self.provider, &other.provider);
        pick(&mut self.platform, &other.platform);
        pick(&mut self.region, &other.region);
        pick(&mut self.availability_zone, &other.availability_zone);
        pick(&mut self.account_id, &other.account_id);
        pick(&mut self.host_id, &other.host_id);
        self
    }

    fn pairs(&self) -> Vec<(&'static str, Arc<str>)> {
        [
            (resource::CLOUD_PROVIDER, &self.provider),
            (resource::CLOUD_PLATFORM, &self.platform),
            (resource::CLOUD_REGION, &self.region),
            (resource::CLOUD_AVAILABILITY_ZONE, &self.availability_zone),
            (resource::CLOUD_ACCOUNT_ID, &self.account_id),
            (resource::HOST_ID, &self.host_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| {
            v.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| (k, Arc::from(v)))
        })
        .collect()
    }
}

/// One detection run, shared by every processor with the same settings.
pub struct Detection {
    result: OnceLock<Option<CloudInfo>>,
    started: Instant,
}

impl Detection {
    /// `None` while running; then `Some(None)` when no provider answered.
    pub fn result(&self) -> Option<&Option<CloudInfo>> {
        self.result.get()
    }

    /// How long detection took, once finished.
    pub fn started(&self) -> Instant {
        self.started
    }
}

type DetectKey = (Vec<&'static str>, CloudEndpoints, Duration);

/// The detection runs of one agent, by settings: every `cloud` processor
/// built with the same detectors, endpoints and timeout follows one run, so
/// the metadata services are asked once however many pipelines list the
/// processor. One registry per agent, kept in its context
/// ([`flowscope_model::Context::services`]), never a global.
#[derive(Clone, Default)]
pub struct Detections(Arc<Mutex<HashMap<DetectKey, Arc<Detection>>>>);

impl Detections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts (or joins) the detection for these settings. Returns at once.
    pub fn detect(
        &self,
        detectors: &[CloudProviderName],
        endpoints: &CloudEndpoints,
        timeout: Duration,
    ) -> Arc<Detection> {
        let names: Vec<&'static str> = detectors.iter().map(|d| provider_name(*d)).collect();
        let key = (names, endpoints.clone(), timeout);
        let mut runs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = runs.get(&key) {
            return d.clone();
        }
        let d = start_detection(detectors, endpoints, timeout);
        runs.insert(key, d.clone());
        d
    }
}

fn start_detection(
    detectors: &[CloudProviderName],
    endpoints: &CloudEndpoints,
    timeout: Duration,
) -> Arc<Detection> {
    let d = Arc::new(Detection {
        result: OnceLock::new(),
        started: Instant::now(),
    });
    let detectors = detectors.to_vec();
    let endpoints = endpoints.clone();
    let run = d.clone();
    let spawned = std::thread::Builder::new()
        .name("flowscope-cloud".into())
        .spawn(move || {
            let found = run_detection(&detectors, &endpoints, timeout);
            match &found {
                Some(info) => tracing::info!(provider = ?info.provider, region = ?info.region, zone = ?info.availability_zone, "cloud detected"),
                None => tracing::info!("no cloud metadata service answered; cloud location unknown"),
            }
            let _ = run.result.set(found);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start cloud detection; cloud location unknown");
        let _ = d.result.set(None);
    }
    d
}

fn provider_name(p: CloudProviderName) -> &'static str {
    match p {
        CloudProviderName::Aws => "aws",
        CloudProviderName::Gcp => "gcp",
        CloudProviderName::Azure => "azure",
    }
}

fn run_detection(
    detectors: &[CloudProviderName],
    endpoints: &CloudEndpoints,
    timeout: Duration,
) -> Option<CloudInfo> {
    // Detection has its own thread (start_detection); the providers are
    // asked at once on one current-thread runtime there.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "no runtime for cloud detection; cloud location unknown");
            return None;
        }
    };
    rt.block_on(async {
        let client: MetadataClient = HyperClient::builder(TokioExecutor::new()).build_http();
        let tasks: Vec<_> = detectors
            .iter()
            .map(|d| {
                let (client, d, endpoints) = (client.clone(), *d, endpoints.clone());
                let agent = Agent { client, timeout };
                tokio::spawn(async move {
                    let r = match d {
                        CloudProviderName::Aws => aws(&agent, &endpoints.aws).await,
                        CloudProviderName::Gcp => gcp(&agent, &endpoints.gcp).await,
                        CloudProviderName::Azure => azure(&agent, &endpoints.azure).await,
                    };
                    if let Err(e) = &r {
                        tracing::debug!(provider = provider_name(d), error = %e, cause = ?std::error::Error::source(e), "cloud metadata not available");
                    }
                    r.ok()
                })
            })
            .collect();
        // Join all, then take the first provider in the configured order.
        let mut results = Vec::with_capacity(tasks.len());
        for t in tasks {
            results.push(t.await.ok().flatten());
        }
        results.into_iter().flatten().next()
    })
}

/// The client and the time one request (answer included) may take.
struct Agent {
    client: MetadataClient,
    timeout: Duration,
}

async fn fetch(
    agent: &Agent,
    method: &str,
    url: String,
    headers: &[(&str, &str)],
) -> Result<(String, http_headers::Map), DetectError> {
    let failed = |source| DetectError::Http {
        url: url.clone(),
        source,
    };
    let mut req = http::Request::builder()
        .method(if method == "PUT" {
            http::Method::PUT
        } else {
            http::Method::GET
        })
        .uri(&url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| failed(HttpError::Request(e)))?;
    let exchange = async {
        let resp = agent.client.request(req).await.map_err(HttpError::Send)?;
        let status = resp.status().as_u16();
        let flavor = resp
            .headers()
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status != 200 {
            return Ok((status, String::new(), flavor));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(HttpError::Body)?
            .to_bytes();
        let body = String::from_utf8(body.to_vec()).map_err(HttpError::Utf8)?;
        Ok((status, body, flavor))
    };
    let (status, body, flavor) = tokio::time::timeout(agent.timeout, exchange)
        .await
        .map_err(|_| failed(HttpError::Timeout(agent.timeout)))?
        .map_err(failed)?;
    if status != 200 {
        return Err(DetectError::Status { url, status });
    }
    Ok((body, http_headers::Map { flavor }))
}

mod http_headers {
    /// The response headers detection looks at.
    pub struct Map {
        pub flavor: Option<String>,
    }
}

fn json<T: for<'de> Deserialize<'de>>(url: &str, body: &str) -> Result<T, DetectError> {
    serde_json::from_str(body).map_err(|source| DetectError::Json {
        url: url.to_owned(),
        source,
    })
}

async fn aws(agent: &Agent, base: &str) -> Result<CloudInfo, DetectError> {
    let (token, _) = fetch(
        agent,
        "PUT",
        format!("{base}/latest/api/token"),
        &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
    )
    .await?;
    let token = token.trim();
    if token.is_empty() {
        return Err(DetectError::NotProvider {
            url: format!("{base}/latest/api/token"),
            provider: "AWS",
            why: "empty token",
        });
    }
    let url = format!("{base}/latest/dynamic/instance-identity/document");
    let (doc, _) = fetch(
        agent,
        "GET",
        url.clone(),
        &[("X-aws-ec2-metadata-token", token)],
    )
    .await?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc {
        region: Option<String>,
        availability_zone: Option<String>,
        account_id: Option<String>,
        instance_id: Option<String>,
    }
    let d: Doc = json(&url, &doc)?;
    Ok(CloudInfo {
        provider: Some(value::CLOUD_PROVIDER_AWS.into()),
        platform: Some(value::CLOUD_PLATFORM_AWS_EC2.into()),
        region: d.region,
        availability_zone: d.availability_zone,
        account_id: d.account_id,
        host_id: d.instance_id,
    })
}

/// One GCP metadata value; the answer must carry `Metadata-Flavor: Google`.
async fn gcp_get(agent: &Agent, base: &str, path: &str) -> Result<String, DetectError> {
    let url = format!("{base}/computeMetadata/v1/{path}");
    let (body, h) = fetch(agent, "GET", url.clone(), &[("Metadata-Flavor", "Google")]).await?;
    if h.flavor.as_deref() != Some("Google") {
        return Err(DetectError::NotProvider {
            url,
            provider: "GCP",
            why: "no `Metadata-Flavor: Google` header",
        });
    }
    Ok(body.trim().to_owned())
}

async fn gcp(agent: &Agent, base: &str) -> Result<CloudInfo, DetectError> {
    let zone_path = gcp_get(agent, base, "instance/zone").await?;
    let zone = zone_path
        .rsplit('/')
        .next()
        .unwrap_or(&zone_path)
        .to_owned();
    let region = zone.rsplit_once('-').map(|(r, _)| r.to_owned());
    let project = gcp_get(agent, base, "project/project-id").await.ok();
    let id = gcp_get(agent, base, "instance/id").await.ok();
    Ok(CloudInfo {
        provider: Some(value::CLOUD_PROVIDER_GCP.into()),
        platform: Some(value::CLOUD_PLATFORM_GCP_COMPUTE_ENGINE.into()),
        region,
        availability_zone: Some(zone).filter(|z| !z.is_empty()),
        account_id: project,
        host_id: id,
    })
}

async fn azure(agent: &Agent, base: &str) -> Result<CloudInfo, DetectError> {
    let url = format!("{base}/metadata/instance/compute?api-version=2021-02-01");
    let (body, _) = fetch(agent, "GET", url.clone(), &[("Metadata", "true")]).await?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Compute {
        location: Option<String>,
        zone: Option<String>,
        subscription_id: Option<String>,
        vm_id: Option<String>,
    }
    let c: Compute = json(&url, &body)?;
    Ok(CloudInfo {
        provider: Some(value::CLOUD_PROVIDER_AZURE.into()),
        platform: Some(value::CLOUD_PLATFORM_AZURE_VM.into()),
        region: c.location,
        availability_zone: c.zone.filter(|z| !z.is_empty()),
        account_id: c.subscription_id,
        host_id: c.vm_id,
    })
}

/// The `cloud` processor.
pub struct Cloud {
    detection: Option<Arc<Detection>>,
    set: CloudAttributes,
    /// Pairs added to every Resource; final once detection has finished.
    pairs: Vec<(&'static str, Arc<str>)>,
    settled: bool,
    /// Pairs added besides the cloud's (the `resourcedetection` `env`
    /// detector's).
    extra: Vec<(Arc<str>, Arc<str>)>,
    /// Keep a value the Resource already has (`resourcedetection` with
    /// `override: false`) instead of replacing it.
    keep_existing: bool,
    /// Enriched Resources by the address of the original, per batch (the
    /// original is held so its address is not reused within the batch).
    cache: HashMap<usize, (Arc<Attrs>, Arc<Attrs>)>,
}

impl Cloud {
    /// Starts (or joins, through `detections`) detection in the background
    /// and returns at once.
    pub fn from_config(c: &CloudProcessorConfig, detections: &Detections) -> Self {
        let detection = (!c.detectors.is_empty())
            .then(|| detections.detect(&c.detectors, &c.endpoints, c.timeout));
        let mut cloud = Cloud {
            detection,
            set: c.set.clone(),
            pairs: Vec::new(),
            settled: false,
            extra: Vec::new(),
            keep_existing: false,
            cache: HashMap::new(),
        };
        cloud.refresh();
        cloud
    }

    /// Also adds `pairs` to every Resource, and with `keep_existing` keeps
    /// any value a Resource already has (the `resourcedetection`
    /// processor's `env` detector and `override: false`).
    pub fn with(mut self, pairs: Vec<(Arc<str>, Arc<str>)>, keep_existing: bool) -> Self {
        self.extra = pairs;
        self.keep_existing = keep_existing;
        self
    }

    /// The detection this processor follows (none when detection is off).
    pub fn detection(&self) -> Option<&Arc<Detection>> {
        self.detection.as_ref()
    }

    fn refresh(&mut self) {
        if self.settled {
            return;
        }
        let (info, settled) = match &self.detection {
            None => (CloudInfo::default(), true),
            Some(d) => match d.result() {
                None => (CloudInfo::default(), false),
                Some(found) => (found.clone().unwrap_or_default(), true),
            },
        };
        self.pairs = info.overridden_by(&self.set).pairs();
        self.settled = settled;
    }

    pub(crate) fn begin_batch(&mut self) {
        self.refresh();
        self.cache.clear();
    }

    /// Adds the cloud keys to the flow's Resource.
    pub fn enrich(&mut self, flow: &mut Flow) {
        if self.pairs.is_empty() && self.extra.is_empty() {
            return;
        }
        let addr = Arc::as_ptr(&flow.resource) as usize;
        if let Some((_, enriched)) = self.cache.get(&addr) {
            flow.resource = enriched.clone();
            return;
        }
        let mut attrs = (*flow.resource).clone();
        let keep = self.keep_existing;
        let original = &flow.resource;
        let pairs = self.pairs.iter().map(|(k, v)| (Arc::from(*k), v));
        let extra = self.extra.iter().map(|(k, v)| (k.clone(), v));
        for (k, v) in extra.chain(pairs) {
            if !(keep && original.get(&k).is_some()) {
                attrs.set(k, v.clone());
            }
        }
        let enriched = Arc::new(attrs);
        let original = std::mem::replace(&mut flow.resource, enriched.clone());
        self.cache.insert(addr, (original, enriched));
    }
}
