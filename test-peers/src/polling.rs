//! Retrying until a condition holds (something happens in the background).

use std::time::{Duration, Instant};

/// Retries until `check` passes (the agent reconnects in the background, say); panics after 30 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
