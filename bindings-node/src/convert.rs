//! Conversions of arguments JavaScript spells differently: milliseconds, RFC 3339 times,
//! addresses.

use std::time::Duration;

use napi::bindgen_prelude::Unknown;
use napi::{Env, JsValue, ValueType};
use remote_access_core::Secret;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::errors::invalid;

/// A duration in milliseconds.
pub(crate) fn millis(env: &Env, what: &'static str, ms: f64) -> napi::Result<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .map_err(|_| invalid(env, what, format!("{ms} ms (must be finite and not negative)")))
}

/// `Some(ms)` → the duration; `None` → `default`.
pub(crate) fn millis_or(
    env: &Env,
    what: &'static str,
    ms: Option<f64>,
    default: Duration,
) -> napi::Result<Duration> {
    ms.map_or(Ok(default), |ms| millis(env, what, ms))
}

pub(crate) fn to_millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// An RFC 3339 time (`2026-11-28T12:00:00Z`).
pub(crate) fn time(env: &Env, what: &'static str, text: &str) -> napi::Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| invalid(env, what, format!("{text:?} is not an RFC 3339 time")))
}

pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

pub(crate) fn ip(env: &Env, what: &'static str, text: &str) -> napi::Result<std::net::IpAddr> {
    text.parse().map_err(|_| invalid(env, what, format!("{text:?} is not an IP address")))
}

pub(crate) fn build_id(env: &Env, id: &str) -> napi::Result<remote_access_core::BuildId> {
    use crate::errors::OrThrow;
    remote_access_core::BuildId::new(id).or_throw(env)
}

/// A whole number from 0 to `max` (JS numbers can be fractional, negative or huge; napi would
/// wrap or truncate them silently).
pub(crate) fn whole(env: &Env, what: &'static str, n: f64, max: f64) -> napi::Result<f64> {
    if n.fract() == 0.0 && (0.0..=max).contains(&n) {
        Ok(n)
    } else {
        Err(invalid(env, what, format!("{n} is not a whole number from 0 to {max}")))
    }
}

/// A secret string argument (a key or a password). napi's own conversion error would quote a
/// wrong-typed value, so the type is checked here and the refusal names only the type.
pub(crate) fn secret(env: &Env, what: &'static str, value: Unknown<'_>) -> napi::Result<Secret<String>> {
    let kind = value.get_type()?;
    if kind != ValueType::String {
        let kind = format!("{kind:?}").to_lowercase();
        return Err(invalid(env, what, format!("must be a string, not a value of type {kind}")));
    }
    let text = value.coerce_to_string()?.into_utf8()?;
    Ok(Secret::new(text.as_str()?.to_owned()))
}

pub(crate) fn port(env: &Env, what: &'static str, port: f64) -> napi::Result<u16> {
    whole(env, what, port, f64::from(u16::MAX)).map(|port| port as u16)
}

pub(crate) fn ports(env: &Env, what: &'static str, ports: &[f64]) -> napi::Result<Vec<u16>> {
    ports.iter().map(|&p| port(env, what, p)).collect()
}
