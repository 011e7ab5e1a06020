//! Asking the witnesses of this trust's log to cosign (issue 28, C2SP
//! tlog-witness, the client's side): for the newest checkpoint, each witness
//! of the policy that has not cosigned it is sent `add-checkpoint` from the
//! size it is believed to hold (0 at first; a 409 states the real size and
//! the request is made again from it once). Every witness is asked at once,
//! each with a time limit; a failure is recorded and that witness rests a
//! while. Nothing here holds up appends or reads: the sequencer signs
//! checkpoints whatever the witnesses do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use citytrust_service::Service;
use citytrust_service::cosigning::{CosignJob, CosignRequest};

/// How long one witness may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a witness that failed is left alone.
const REST_AFTER_FAILURE: Duration = Duration::from_secs(2);

/// What the client remembers between rounds.
pub struct Cosigning {
    client: reqwest::Client,
    /// The size each witness (by policy name) is believed to hold.
    believed: Mutex<HashMap<String, u64>>,
    /// Witnesses resting after a failure, until when.
    resting: Mutex<HashMap<String, Instant>>,
}

impl Default for Cosigning {
    fn default() -> Self {
        Cosigning::new()
    }
}

impl Cosigning {
    pub fn new() -> Cosigning {
        Cosigning {
            client: reqwest::Client::builder()
                .timeout(ANSWER_WITHIN)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            believed: Mutex::default(),
            resting: Mutex::default(),
        }
    }

    fn believed(&self, name: &str) -> u64 {
        self.believed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn believe(&self, name: &str, size: u64) {
        self.believed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_string(), size);
    }

    fn resting(&self, name: &str) -> bool {
        self.resting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .is_some_and(|until| Instant::now() < *until)
    }

    async fn failed(&self, service: &Service, w: &CosignRequest, why: String) {
        tracing::warn!(witness = %w.name, error = %why, "a witness did not cosign");
        self.resting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(w.name.clone(), Instant::now() + REST_AFTER_FAILURE);
        if let Err(e) = service.cosign_failed(w.witness, &why).await {
            tracing::warn!(error = %e, "could not record a witness's failure");
        }
    }

    /// One round: ask every witness that has not cosigned the newest
    /// checkpoint (and is not resting). Returns how many cosigned.
    pub async fn round(&self, service: &Service) -> usize {
        let job = match service.cosign_job().await {
            Ok(Some(job)) => job,
            Ok(None) => return 0,
            Err(e) => {
                tracing::warn!(error = %e, "could not tell which checkpoint to have cosigned");
                return 0;
            }
        };
        let asks = job
            .ask
            .iter()
            .filter(|w| !self.resting(&w.name))
            .map(|w| self.ask(service, &job, w));
        futures::future::join_all(asks)
            .await
            .into_iter()
            .filter(|&ok| ok)
            .count()
    }

    async fn ask(&self, service: &Service, job: &CosignJob, w: &CosignRequest) -> bool {
        let mut old = self.believed(&w.name);
        if old > job.size {
            old = 0;
        }
        for _ in 0..2 {
            let proof = if old == 0 || old == job.size {
                Vec::new()
            } else {
                match service.ledger_consistency(old, job.size).await {
                    Ok(p) => p,
                    Err(e) => {
                        self.failed(service, w, format!("no consistency proof from {old}: {e}"))
                            .await;
                        return false;
                    }
                }
            };
            let mut body = format!("old {old}\n");
            for h in &proof {
                body.push_str(&base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    h,
                ));
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&job.note);
            let answer = self
                .client
                .post(format!("{}/add-checkpoint", w.url))
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await;
            let res = match answer {
                Ok(res) => res,
                Err(e) => {
                    self.failed(service, w, format!("unreachable: {e}")).await;
                    return false;
                }
            };
            let status = res.status().as_u16();
            let size_header = res
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/x.tlog.size"));
            let text = match res.text().await {
                Ok(t) => t,
                Err(e) => {
                    self.failed(service, w, format!("its answer could not be read: {e}"))
                        .await;
                    return false;
                }
            };
            match status {
                200 => {
                    return match service.keep_cosignature(job.size, w.witness, &text).await {
                        Ok(true) => {
                            self.believe(&w.name, job.size);
                            true
                        }
                        Ok(false) => {
                            self.resting
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .insert(w.name.clone(), Instant::now() + REST_AFTER_FAILURE);
                            false
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not keep a cosignature");
                            false
                        }
                    };
                }
                409 if size_header => match text.trim().parse::<u64>() {
                    Ok(held) if held <= job.size => {
                        self.believe(&w.name, held);
                        old = held;
                    }
                    Ok(held) => {
                        self.failed(
                            service,
                            w,
                            format!(
                                "it holds size {held}, beyond this log's newest checkpoint {}",
                                job.size
                            ),
                        )
                        .await;
                        return false;
                    }
                    Err(_) => {
                        self.failed(service, w, "a 409 without a size".into()).await;
                        return false;
                    }
                },
                _ => {
                    let detail: String = text.chars().take(300).collect();
                    self.failed(service, w, format!("answered {status}: {detail}"))
                        .await;
                    return false;
                }
            }
        }
        false
    }
}

/// Witness each other with the trust at `base` (`serve --peer`): until it
/// answers, ask it every 2 s for its log's key and its witness's key, then
/// witness its log and add its witness (at `base/witness`) to this log's
/// policy. Keys taken on first contact, as a demo does; a trust in
/// production pins them in its configuration.
pub fn spawn_peering(service: std::sync::Arc<Service>, base: String) {
    tokio::spawn(async move {
        let base = base.trim_end_matches('/').to_string();
        let client = reqwest::Client::builder()
            .timeout(ANSWER_WITHIN)
            .build()
            .unwrap_or_default();
        let fetch = |path: &'static str| {
            let (client, url) = (client.clone(), format!("{base}{path}"));
            async move {
                let res = client.get(&url).send().await.ok()?;
                if !res.status().is_success() {
                    return None;
                }
                Some(res.text().await.ok()?.trim().to_string())
            }
        };
        loop {
            if let (Some(log_key), Some(witness_key)) =
                (fetch("/ledger/key").await, fetch("/witness/key").await)
            {
                let origin = log_key.split('+').next().unwrap_or_default().to_string();
                let added =
                    citytrust_service::witness::WitnessedLog::parse(&format!("{origin}={log_key}"))
                        .map_err(|e| e.to_string())
                        .and_then(|log| {
                            service
                                .add_peer(log, &witness_key, &format!("{base}/witness"))
                                .map_err(|e| e.to_string())
                        });
                match added {
                    Ok(()) => {
                        tracing::info!(peer = %base, log = %origin, "witnessing each other with a peer");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(peer = %base, error = %e, "a peer's keys are not usable");
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}
