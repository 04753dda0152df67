//! Status writes from hooks (`POST /hook/set-status`) and the sweeps that
//! keep status honest: pending hooks and the stuck-`working` TTL.

use chrono::Duration;
use uuid::Uuid;

use super::audit::Actor;
use super::signal::Signal;
use super::Ctx;
use crate::config::HookAuth;
use crate::protocol::{Source, Status};
use crate::store::{Bucket, StoreError};

/// How long a hook that named no presence waits for its session's hello
/// (PROTOCOL.md: 10 s).
pub const PENDING_HOOK_SECONDS: i64 = 10;
/// Rate-bucket scope of hook budgets (send budgets are scoped by mesh).
const HOOK_BUCKET_SCOPE: &str = "hook";

/// A validated hook body.
pub struct HookRequest {
    pub cwd: String,
    pub pid: i64,
    pub status: Status,
    /// `Authorization: Bearer …`, if sent.
    pub bearer: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// Applied to these presences (the first is reported).
    Applied(Vec<Uuid>),
    /// No presence yet: kept for a hello in the next 10 s.
    Pending,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HookError {
    Unauthorized,
    RateLimited,
    Unavailable,
}

impl From<StoreError> for HookError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store failed during hook");
        HookError::Unavailable
    }
}

fn fresh_window_ms(ctx: &Ctx) -> i64 {
    (ctx.config.settings.hook_fresh_window_seconds * 1000) as i64
}

pub async fn hook(ctx: &Ctx, req: HookRequest) -> Result<HookOutcome, HookError> {
    match tokio::time::timeout(super::db_timeout(), hook_inner(ctx, req)).await {
        Ok(r) => r,
        Err(_) => Err(HookError::Unavailable),
    }
}

async fn hook_inner(ctx: &Ctx, req: HookRequest) -> Result<HookOutcome, HookError> {
    let targets = match ctx.config.hook_auth {
        HookAuth::Token => {
            let token = req.bearer.as_deref().ok_or(HookError::Unauthorized)?;
            let hash = super::hello::hook_token_hash(token);
            let p = ctx
                .store
                .presence_by_hook_token(&hash)
                .await?
                .ok_or(HookError::Unauthorized)?;
            vec![p.id]
        }
        HookAuth::None => ctx.store.hook_targets(Some(req.pid), &req.cwd).await?,
    };
    let now = ctx.now();
    let rate = ctx.config.settings.hook_rate_limit_per_min;
    // With tokens, the bucket is the session the token names: a body's
    // (pid, cwd) is anyone's to claim, and keying on it let any valid
    // token of any mesh lock another session's hooks out.
    let key = match ctx.config.hook_auth {
        HookAuth::Token => format!("p:{}", targets[0]),
        HookAuth::None => format!("{}:{}", req.pid, req.cwd),
    };
    let bucket = Bucket {
        key,
        rate_per_min: rate,
        burst: rate,
    };
    if !ctx
        .store
        .take_token(HOOK_BUCKET_SCOPE, &bucket, now)
        .await?
    {
        return Err(HookError::RateLimited);
    }
    if targets.is_empty() {
        ctx.store
            .insert_pending_status(req.pid, &req.cwd, req.status, now)
            .await?;
        return Ok(HookOutcome::Pending);
    }
    for id in &targets {
        write_status(ctx, *id, req.status, Source::Hook).await?;
    }
    Ok(HookOutcome::Applied(targets))
}

/// One status write under the status model, from any source. Wakes
/// the session (on whichever node holds it) when it turns idle, and
/// audits hook changes when configured to.
pub async fn write_status(
    ctx: &Ctx,
    presence: Uuid,
    status: Status,
    source: Source,
) -> Result<(), StoreError> {
    let written = ctx
        .store
        .write_status(presence, status, source, ctx.now(), fresh_window_ms(ctx))
        .await?;
    let audited = source == Source::Hook && ctx.config.settings.audit_status_changes;
    if let Some(w) = written.filter(|w| w.changed && audited) {
        // The hook names no member: look the presence up for the chain.
        if let Ok(Some(p)) = ctx.store.presence_by_id(presence).await {
            ctx.audit.record(
                &p.mesh_id,
                "status_changed",
                Some(Actor {
                    member_id: &p.member_id,
                    name: &p.display_name,
                }),
                serde_json::json!({"presence_id": presence, "status": w.status.as_str(), "source": "hook"}),
            );
        }
    }
    if let Some(w) = written.filter(|w| w.changed && w.status == Status::Idle) {
        // Held `next`/`low` messages are deliverable now.
        ctx.signal(w.node_id, Signal::Wake { p: vec![presence] });
    }
    Ok(())
}

/// A hello with (pid, cwd): applies a hook that arrived first.
pub async fn apply_pending_hook(
    ctx: &Ctx,
    presence: Uuid,
    pid: i64,
    cwd: &str,
) -> Result<(), StoreError> {
    let since = ctx.now() - Duration::seconds(PENDING_HOOK_SECONDS);
    if let Some(status) = ctx.store.take_pending_status(pid, cwd, since).await? {
        write_status(ctx, presence, status, Source::Hook).await?;
    }
    Ok(())
}

/// Sweeper step: stuck `working` → idle, and stale pending hooks.
pub async fn sweep_status(ctx: &Ctx) -> Result<(), StoreError> {
    let now = ctx.now();
    let ttl = Duration::seconds(ctx.config.settings.status_ttl_seconds as i64);
    for r in ctx.store.expire_working(now - ttl, now).await? {
        ctx.signal(r.node_id, Signal::Wake { p: vec![r.id] });
    }
    ctx.store
        .sweep_pending_status(now - Duration::seconds(PENDING_HOOK_SECONDS))
        .await?;
    // A bucket idle for its full refill time is full: the same as none.
    let s = &ctx.config.settings;
    let refill = |burst: u32, per_min: u32| i64::from(burst) * 60 / i64::from(per_min.max(1)) + 1;
    let idle = refill(s.send_burst, s.send_rate_per_min)
        .max(refill(s.hook_rate_limit_per_min, s.hook_rate_limit_per_min));
    ctx.store
        .sweep_rate_buckets(now - Duration::seconds(idle))
        .await?;
    Ok(())
}
