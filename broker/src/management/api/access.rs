//! `/api/users`, `/api/vhosts`, `/api/permissions` and `/api/whoami`: reading and writing
//! users, vhosts and permissions (administrator tag for writes).

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::*;
use crate::access::AccessControl;

/// Middleware of the administrator-only routes (users, permissions, one vhost): refuses every
/// other caller with 403 before the handler looks anything up, so that an object that exists
/// and one that does not answer alike.
pub(super) async fn administrators_only(
    Extension(me): Me,
    request: Request,
    next: Next,
) -> Response {
    match me.require_administrator() {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Runs `change` on the broker's users and permissions off the runtime: each change saves
/// `access.json` (an fsync).
async fn change_access<T: Send + 'static>(
    ctx: &Ctx,
    change: impl FnOnce(&AccessControl) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let broker = ctx.broker.clone();
    crate::management::off_runtime(move || change(&broker.access)).await
}

pub(super) fn user_json(u: &UserInfo) -> Value {
    json!({ "name": u.name, "tags": u.tags, "hashing_algorithm": "rabbit_password_hashing_sha256" })
}

pub(super) async fn whoami(Extension(me): Me) -> ApiResult {
    Ok(Json(json!({ "name": me.user.name, "tags": me.user.tags })))
}

pub(super) async fn users(State(ctx): State<Ctx>) -> ApiResult {
    Ok(Json(Value::Array(
        ctx.broker.access.users().iter().map(user_json).collect(),
    )))
}

pub(super) async fn user(State(ctx): State<Ctx>, Path(name): Path<String>) -> ApiResult {
    let u = ctx
        .broker
        .access
        .user(&name)
        .ok_or_else(|| ApiError::not_found(format!("user '{name}' does not exist")))?;
    Ok(Json(user_json(&u)))
}

/// `PUT /api/users/{user}` body: `{"password": "...", "tags": "administrator,monitoring"}`
/// (tags also accepted as a list, as RabbitMQ 3.10 accepts both).
#[derive(Debug, Deserialize)]
pub(super) struct PutUser {
    password: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
}

pub(super) async fn put_user(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    body: Result<Json<PutUser>, axum::extract::rejection::JsonRejection>,
) -> Done {
    let Json(body) = body?;
    let tags: Option<Vec<String>> = match body.tags {
        None => None,
        Some(Value::String(s)) => Some(s.split(',').map(|t| t.trim().to_owned()).collect()),
        Some(Value::Array(a)) => Some(
            a.into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        ),
        Some(_) => return Err(ApiError::bad_request("tags must be a string or a list")),
    };
    change_access(&ctx, move |access| {
        let exists = access.user(&name).is_some();
        let status = match (&body.password, exists) {
            (Some(pw), false) => {
                access.add_user(&name, pw)?;
                StatusCode::CREATED
            }
            (Some(pw), true) => {
                access.change_password(&name, pw)?;
                StatusCode::NO_CONTENT
            }
            (None, true) => StatusCode::NO_CONTENT,
            (None, false) => return Err(ApiError::bad_request("password is required")),
        };
        if let Some(tags) = tags {
            access.set_user_tags(&name, &tags)?;
        }
        Ok(status)
    })
    .await
}

pub(super) async fn delete_user(State(ctx): State<Ctx>, Path(name): Path<String>) -> Done {
    change_access(&ctx, move |access| Ok(access.delete_user(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The vhosts the caller may list (see `caller`), with their message totals.
pub(super) async fn vhosts(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Query(rq): Query<RateQuery>,
) -> ApiResult {
    let out = me
        .listed_vhosts(&ctx)
        .iter()
        .map(|vh| {
            let qs: Vec<_> = vh.read().queues.values().cloned().collect();
            let (ready, unacked) = qs.iter().fold((0u64, 0u64), |acc, q| {
                let f = q.figures();
                (acc.0 + f.ready, acc.1 + f.unacked)
            });
            let (message_stats, lengths) =
                ctx.rates
                    .vhosts_json(std::slice::from_ref(&vh.name), &vh.stats.counters(), &rq);
            let mut v = json!({
                "name": vh.name,
                "messages_ready": ready,
                "messages_unacknowledged": unacked,
                "messages": ready + unacked,
                "message_stats": message_stats,
            });
            if let Value::Object(map) = &mut v {
                map.extend(lengths);
            }
            v
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// One vhost: administrators only, as in RabbitMQ 3.10 (others read `/api/vhosts`).
pub(super) async fn vhost(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(name): Path<String>,
) -> ApiResult {
    me.enter(&ctx, &name)?;
    Ok(Json(json!({ "name": name })))
}

pub(super) async fn put_vhost(State(ctx): State<Ctx>, Path(name): Path<String>) -> Done {
    if ctx.broker.access.vhost_exists(&name) {
        return Ok(StatusCode::NO_CONTENT);
    }
    let admin = crate::admin::Admin::new(ctx.broker.clone());
    crate::management::off_runtime(move || Ok(admin.add_vhost(&name)?)).await?;
    Ok(StatusCode::CREATED)
}

pub(super) async fn delete_vhost(State(ctx): State<Ctx>, Path(name): Path<String>) -> Done {
    // Blocks for the store's commit and the save of `access.json`: off the runtime.
    let admin = crate::admin::Admin::new(ctx.broker.clone());
    crate::management::off_runtime(move || Ok(admin.delete_vhost(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn permissions_json(list: Vec<crate::access::PermissionInfo>) -> Value {
    Value::Array(
        list.into_iter()
            .map(|p| {
                json!({ "user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read })
            })
            .collect(),
    )
}

pub(super) async fn permissions(State(ctx): State<Ctx>) -> ApiResult {
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(None, None),
    )))
}

pub(super) async fn vhost_permissions(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path(vhost): Path<String>,
) -> ApiResult {
    me.enter(&ctx, &vhost)?;
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(Some(&vhost), None),
    )))
}

pub(super) async fn user_permissions(
    State(ctx): State<Ctx>,
    Path(user): Path<String>,
) -> ApiResult {
    if ctx.broker.access.user(&user).is_none() {
        return Err(ApiError::not_found(format!("user '{user}' does not exist")));
    }
    Ok(Json(permissions_json(
        ctx.broker.access.permissions(None, Some(&user)),
    )))
}

pub(super) async fn permission(
    State(ctx): State<Ctx>,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let mut list = ctx.broker.access.permissions(Some(&vhost), Some(&user));
    let p = list
        .pop()
        .ok_or_else(|| ApiError::not_found("no permissions"))?;
    Ok(Json(permissions_json(vec![p])[0].clone()))
}

/// `PUT /api/permissions/{vhost}/{user}` body.
#[derive(Debug, Deserialize)]
pub(super) struct PutPermission {
    configure: String,
    write: String,
    read: String,
}

pub(super) async fn put_permission(
    State(ctx): State<Ctx>,
    Path((vhost, user)): Path<(String, String)>,
    body: Result<Json<PutPermission>, axum::extract::rejection::JsonRejection>,
) -> Done {
    let Json(p) = body?;
    let created = ctx
        .broker
        .access
        .permissions(Some(&vhost), Some(&user))
        .is_empty();
    change_access(&ctx, move |access| {
        Ok(access.set_permissions(&vhost, &user, &p.configure, &p.write, &p.read)?)
    })
    .await?;
    Ok(put_status(created))
}

pub(super) async fn delete_permission(
    State(ctx): State<Ctx>,
    Path((vhost, user)): Path<(String, String)>,
) -> Done {
    change_access(&ctx, move |access| {
        Ok(access.clear_permissions(&vhost, &user)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
