//! Running a manifest's `[[verify]]` checks once every service of a run is
//! healthy: each is retried until it passes or its timeout ends.

use std::time::Duration;

use crate::domain::manifest::{Manifest, Provider, VerifyCheck, VerifyProbe};

/// Where an HTTP check is sent: an absolute URL as is, a path on the
/// service's stable address (local: `launch.listen`; ec2: its DNS name).
pub fn url(m: &Manifest, region: &str, check: &VerifyCheck) -> Option<String> {
    let VerifyProbe::Http { service, http, .. } = &check.probe else { return None };
    if http.starts_with("http://") || http.starts_with("https://") {
        return Some(http.clone());
    }
    let svc = m.services.get(service.as_deref()?)?;
    let host = match m.provider {
        Provider::Local => svc.launch.get("listen")?.as_str()?.to_string(),
        Provider::Ec2 => crate::provider::ec2::settings::resolve(&svc.launch, region).ok()?.dns?.name,
    };
    Some(format!("http://{host}{http}"))
}

/// The network namespace a drill's checks are sent from (local drills
/// isolated in one): there, production's addresses are the drill's.
fn network(m: &Manifest) -> Option<&str> {
    let key = crate::provider::local::netns::LAUNCH_KEY;
    match m.provider {
        Provider::Local => m.services.values().find_map(|s| s.launch.get(key)?.as_str()),
        Provider::Ec2 => None,
    }
}

/// How much of a check's answer is read (for `body_contains`).
const MAX_BODY: usize = 1 << 20;

/// One attempt: `Err` says what was wrong.
async fn attempt(m: &Manifest, region: &str, check: &VerifyCheck) -> Result<String, String> {
    match &check.probe {
        VerifyProbe::Http { status, body_contains, .. } => {
            let url = url(m, region, check).ok_or("the service has no address to request")?;
            if let Some(net) = network(m) {
                let (got, body) =
                    crate::provider::local::netns::http_get(net, &url, Duration::from_secs(5), MAX_BODY).await?;
                return judge(&url, got, &body, *status, body_contains.as_deref());
            }
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            let resp = client.get(&url).send().await.map_err(|e| format!("GET {url}: {}", e.without_url()))?;
            let got = resp.status().as_u16();
            // Bounded: a check answered with gigabytes reads no more than this.
            let body = crate::provider::health::body_start(resp, MAX_BODY).await;
            judge(&url, got, &body, *status, body_contains.as_deref())
        }
        VerifyProbe::Command { command } => {
            let env = vec![("PATH".to_string(), "/usr/local/bin:/usr/bin:/bin".to_string())];
            crate::provider::health::probe_command(
                network(m),
                command,
                &env,
                &std::env::temp_dir(),
                Duration::from_secs(30),
            )
            .await
            .map(|()| format!("{} exited 0", command[0]))
        }
    }
}

/// Whether an answer is the one a check wants.
fn judge(url: &str, got: u16, body: &str, status: u16, body_contains: Option<&str>) -> Result<String, String> {
    if got != status {
        let start = crate::provider::health::one_line(body);
        let said = if start.is_empty() { String::new() } else { format!(": {start}") };
        return Err(format!("GET {url}: HTTP {got}, want {status}{said}"));
    }
    if let Some(want) = body_contains
        && !body.contains(want)
    {
        return Err(format!("GET {url}: HTTP {got}, but the body does not contain \"{want}\""));
    }
    Ok(format!("GET {url}: HTTP {got}"))
}

/// Retries until the check passes or its timeout ends: (passed, detail).
pub async fn run(m: &Manifest, region: &str, check: &VerifyCheck) -> (bool, String) {
    let deadline = tokio::time::Instant::now() + check.timeout.0;
    let mut pauses = crate::backoff::pauses(Duration::from_millis(250), Duration::from_secs(1));
    loop {
        match attempt(m, region, check).await {
            Ok(detail) => return (true, detail),
            Err(why) => {
                let pause = pauses.next().unwrap_or(Duration::from_secs(1));
                if tokio::time::Instant::now() + pause >= deadline {
                    return (false, why);
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}
