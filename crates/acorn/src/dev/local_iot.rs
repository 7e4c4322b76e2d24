//! AWS IoT Core's provisioning MQTT API served by the local stack: the registration service's
//! MQTT link (its service identity, on the broker's service listener) answers each device's
//! `CreateCertificateFromCsr` and `RegisterThing` on that device's own topics
//! (`acorn-local/<id>/…`, which the broker lets only that device use), watches the devices'
//! status for the first use of a new certificate (then the old one is revoked), and carries
//! the admin API's commands (`POST /v1/devices/{id}/rotate`).

use std::sync::Arc;
use std::time::Duration;

use acorn_backend::rotation::{CommandSink, LocalIot};
use acorn_mqtt::provisioning::{
    self, CreateCertificateFromCsrRequest, ProvisioningRejected, RegisterThingRequest,
    LOCAL_CLAIM_ROOT, LOCAL_TOPIC_ROOT,
};
use acorn_transport::rumqttc::{AsyncClient, Event, EventLoop, Packet, Publish, QoS};
use acorn_transport::SessionOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Largest request read (a CSR is ~0.5–1.5 KB).
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How often certificates issued and never used are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Pause after a lost connection before the event loop reconnects.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// A running responder; stops when dropped or stopped.
pub struct Responder {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Connects with `options` (the backend's service identity on the device broker) and, when
    /// given, `claim` (the same identity on the claim endpoint's service listener), and
    /// serves until stopped. Returns the responder and a [`CommandSink`] that publishes
    /// through the device broker connection.
    pub fn start(
        iot: LocalIot,
        options: &SessionOptions,
        claim: Option<&SessionOptions>,
    ) -> anyhow::Result<(Self, CommandSink)> {
        let connect = |options: &SessionOptions| {
            options
                .connect()
                .map_err(|e| anyhow::anyhow!("the provisioning responder's MQTT options: {e}"))
        };
        let (client, events) = connect(options)?;
        let sink_client = client.clone();
        let sink: CommandSink = Arc::new(move |topic: &str, payload: Vec<u8>| {
            sink_client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| e.to_string())
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(serve(
            iot.clone(),
            client,
            events,
            device_filters(),
            stop_rx.clone(),
        ))];
        if let Some(claim) = claim {
            let (client, events) = connect(claim)?;
            tasks.push(tokio::spawn(serve(
                iot,
                client,
                events,
                claim_filters(),
                stop_rx,
            )));
        }
        Ok((Self { stop, tasks }, sink))
    }

    /// Stops serving and waits (bounded) for the connections to close.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The filters of the device broker connection: every device's requests of both APIs, and
/// every device's status (for the certificate it reports in use).
fn device_filters() -> Vec<String> {
    vec![
        format!("{LOCAL_TOPIC_ROOT}/+/{}", provisioning::CREATE_FROM_CSR),
        format!("{LOCAL_TOPIC_ROOT}/+/$aws/provisioning-templates/+/provision/json"),
        format!("{}/+", acorn_mqtt::TOPIC_DEVICE_STATUS),
    ]
}

/// The filters of the claim endpoint connection: every claim connection's requests.
fn claim_filters() -> Vec<String> {
    vec![
        format!("{LOCAL_CLAIM_ROOT}/+/{}", provisioning::CREATE_FROM_CSR),
        format!("{LOCAL_CLAIM_ROOT}/+/$aws/provisioning-templates/+/provision/json"),
    ]
}

async fn serve(
    iot: LocalIot,
    client: AsyncClient,
    mut events: EventLoop,
    filters: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    // The certificate id each device last reported, so a heartbeat costs no database call.
    let mut reported: std::collections::HashMap<String, String> = Default::default();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = sweep.tick() => {
                if let Err(e) = iot.abandon_stale().await {
                    tracing::warn!(error = %e, "sweeping unused rotation certificates failed");
                }
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for filter in &filters {
                        if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                            tracing::warn!(error = %e, "the provisioning responder cannot subscribe");
                        }
                    }
                    tracing::info!("provisioning responder connected");
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    handle(&iot, &client, publish, &mut reported).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "provisioning responder: connection lost; reconnecting");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}

/// What a topic the responder reads is.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    /// `acorn-local/<id>/$aws/certificates/create-from-csr/json`.
    CreateFromCsr { device_id: &'a str },
    /// `acorn-local/<id>/$aws/provisioning-templates/<template>/provision/json`.
    RegisterThing {
        device_id: &'a str,
        template: &'a str,
    },
    /// `acorn-pups/status/<id>`.
    Status { device_id: &'a str },
    /// `acorn-claim/claim:<id>/$aws/certificates/create-from-csr/json`.
    ClaimCreateFromCsr { device_id: &'a str },
    /// `acorn-claim/claim:<id>/$aws/provisioning-templates/<template>/provision/json`.
    ClaimRegisterThing {
        device_id: &'a str,
        template: &'a str,
    },
}

/// Reads a topic; `None` for anything else (answers, malformed ids).
fn classify(topic: &str) -> Option<Request<'_>> {
    if let Some(device_id) = topic
        .strip_prefix(acorn_mqtt::TOPIC_DEVICE_STATUS)
        .and_then(|t| t.strip_prefix('/'))
    {
        return acorn_mqtt::check_device_id(device_id)
            .is_ok()
            .then_some(Request::Status { device_id });
    }
    if let Some(rest) = topic
        .strip_prefix(LOCAL_CLAIM_ROOT)
        .and_then(|t| t.strip_prefix('/'))
    {
        let (client_id, api) = rest.split_once('/')?;
        let device_id = acorn_mqtt::topics::device_of_claim_client(client_id)?;
        return Some(match api_of(api)? {
            Api::CreateFromCsr => Request::ClaimCreateFromCsr { device_id },
            Api::RegisterThing(template) => Request::ClaimRegisterThing {
                device_id,
                template,
            },
        });
    }
    let rest = topic.strip_prefix(LOCAL_TOPIC_ROOT)?.strip_prefix('/')?;
    let (device_id, api) = rest.split_once('/')?;
    acorn_mqtt::check_device_id(device_id).ok()?;
    Some(match api_of(api)? {
        Api::CreateFromCsr => Request::CreateFromCsr { device_id },
        Api::RegisterThing(template) => Request::RegisterThing {
            device_id,
            template,
        },
    })
}

/// Which call of the API a topic (after its prefix) is.
enum Api<'a> {
    CreateFromCsr,
    RegisterThing(&'a str),
}

fn api_of(api: &str) -> Option<Api<'_>> {
    if api == provisioning::CREATE_FROM_CSR {
        return Some(Api::CreateFromCsr);
    }
    let template = api
        .strip_prefix("$aws/provisioning-templates/")?
        .strip_suffix("/provision/json")?;
    (!template.contains('/')).then_some(Api::RegisterThing(template))
}

async fn handle(
    iot: &LocalIot,
    client: &AsyncClient,
    publish: Publish,
    reported: &mut std::collections::HashMap<String, String>,
) {
    let Some(request) = classify(&publish.topic) else {
        return;
    };
    let answer = match request {
        Request::Status { device_id } => {
            status(iot, device_id, &publish.payload, reported).await;
            return;
        }
        Request::CreateFromCsr { device_id } => {
            match parse::<CreateCertificateFromCsrRequest>(&publish.payload) {
                Ok(req) => iot
                    .create_certificate_from_csr(device_id, &req)
                    .await
                    .and_then(|a| to_json(&a)),
                Err(rejected) => Err(rejected),
            }
        }
        Request::RegisterThing {
            device_id,
            template,
        } => match parse::<RegisterThingRequest>(&publish.payload) {
            Ok(req) => iot
                .register_thing(device_id, template, &req)
                .await
                .and_then(|a| to_json(&a)),
            Err(rejected) => Err(rejected),
        },
        Request::ClaimCreateFromCsr { device_id } => {
            match parse::<CreateCertificateFromCsrRequest>(&publish.payload) {
                Ok(req) => iot
                    .claim_certificate_from_csr(device_id, &req)
                    .await
                    .and_then(|a| to_json(&a)),
                Err(rejected) => Err(rejected),
            }
        }
        Request::ClaimRegisterThing {
            device_id,
            template,
        } => match parse::<RegisterThingRequest>(&publish.payload) {
            Ok(req) => iot
                .claim_register_thing(device_id, template, &req)
                .await
                .and_then(|a| to_json(&a)),
            Err(rejected) => Err(rejected),
        },
    };
    let (suffix, body) = match answer {
        Ok(body) => ("accepted", body),
        Err(rejected) => {
            tracing::info!(topic = %publish.topic, code = %rejected.error_code,
                message = %rejected.error_message, "provisioning request rejected");
            match to_json(&rejected) {
                Ok(body) => ("rejected", body),
                Err(_) => return,
            }
        }
    };
    let topic = format!("{}/{suffix}", publish.topic);
    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, false, body).await {
        tracing::warn!(error = %e, "the provisioning answer could not be queued");
    }
}

/// A status from `device_id`: when the certificate it reports in use changed, tell the
/// registration service (a rotation's new certificate becomes current, the old one revoked).
async fn status(
    iot: &LocalIot,
    device_id: &str,
    payload: &[u8],
    reported: &mut std::collections::HashMap<String, String>,
) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return;
    };
    let Some(certificate_id) = value.get("certificateId").and_then(|v| v.as_str()) else {
        return;
    };
    if reported.get(device_id).map(String::as_str) == Some(certificate_id) {
        return;
    }
    match iot.certificate_in_use(device_id, certificate_id).await {
        Ok(_) => {
            reported.insert(device_id.to_owned(), certificate_id.to_owned());
        }
        Err(e) => {
            tracing::error!(%device_id, error = %e, "the superseded certificate could not be revoked; retrying at the next status")
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ProvisioningRejected> {
    let invalid = |detail: String| ProvisioningRejected {
        status_code: 400,
        error_code: "InvalidPayload".into(),
        error_message: detail,
    };
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(invalid(format!(
            "the request is {} bytes, over {MAX_REQUEST_BYTES}",
            payload.len()
        )));
    }
    serde_json::from_slice(payload)
        .map_err(|e| invalid(format!("the request is not the documented JSON: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ProvisioningRejected> {
    provisioning::to_json(value).map_err(|e| ProvisioningRejected {
        status_code: 500,
        error_code: "InternalFailure".into(),
        error_message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_read_by_their_device_and_api() {
        assert_eq!(
            classify("acorn-local/dev-1/$aws/certificates/create-from-csr/json"),
            Some(Request::CreateFromCsr { device_id: "dev-1" })
        );
        assert_eq!(
            classify("acorn-local/dev-1/$aws/provisioning-templates/acorn-pups/provision/json"),
            Some(Request::RegisterThing {
                device_id: "dev-1",
                template: "acorn-pups"
            })
        );
        assert_eq!(
            classify("acorn-pups/status/dev-1"),
            Some(Request::Status { device_id: "dev-1" })
        );
        for other in [
            "acorn-local/dev-1/$aws/certificates/create-from-csr/json/accepted",
            "acorn-local/dev-1/$aws/provisioning-templates/a/b/provision/json",
            "acorn-local/bad:id/$aws/certificates/create-from-csr/json",
            "acorn-pups/status/bad:id",
            "acorn-pups/button-press/dev-1",
        ] {
            assert_eq!(classify(other), None, "{other}");
        }
    }

    #[test]
    fn claim_topics_name_the_device_by_the_claim_client_id() {
        assert_eq!(
            classify("acorn-claim/claim:dev-9/$aws/certificates/create-from-csr/json"),
            Some(Request::ClaimCreateFromCsr { device_id: "dev-9" })
        );
        assert_eq!(
            classify(
                "acorn-claim/claim:dev-9/$aws/provisioning-templates/acorn-pups/provision/json"
            ),
            Some(Request::ClaimRegisterThing {
                device_id: "dev-9",
                template: "acorn-pups"
            })
        );
        for other in [
            "acorn-claim/dev-9/$aws/certificates/create-from-csr/json",
            "acorn-claim/claim:bad:id/$aws/certificates/create-from-csr/json",
            "acorn-claim/claim:dev-9/$aws/certificates/create-from-csr/json/accepted",
        ] {
            assert_eq!(classify(other), None, "{other}");
        }
    }

    #[test]
    fn the_subscriptions_match_the_request_topics() {
        for f in device_filters().iter().chain(claim_filters().iter()) {
            assert!(!f.contains('#'), "{f}");
        }
        assert!(device_filters()[0].starts_with("acorn-local/+/$aws/certificates/"));
        assert!(claim_filters()[0].starts_with("acorn-claim/+/$aws/certificates/"));
    }
}
