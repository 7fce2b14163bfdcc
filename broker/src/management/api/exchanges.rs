//! `/api/exchanges` and `/api/bindings`: the lists, per vhost or all.

use super::*;

pub(super) fn all_exchanges(ctx: &Ctx, me: &Caller, only: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, me, only)? {
        let topo = vh.read();
        let mut xs: Vec<_> = topo.exchanges.values().collect();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(xs.into_iter().map(|x| exchange_json(&vh, x)));
    }
    Ok(Json(Value::Array(out)))
}

/// `/api/exchanges` and `/api/exchanges/{vhost}`.
pub(super) async fn exchanges(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    vhost: Option<Path<String>>,
) -> ApiResult {
    all_exchanges(&ctx, &me, vhost.as_deref().map(String::as_str))
}

pub(super) fn all_bindings(ctx: &Ctx, me: &Caller, only: Option<&str>) -> ApiResult {
    let mut out = Vec::new();
    for vh in vhosts_of(ctx, me, only)? {
        out.extend(bindings_of(&vh, |_, _, _| true));
    }
    Ok(Json(Value::Array(out)))
}

/// `/api/bindings` and `/api/bindings/{vhost}`.
pub(super) async fn bindings(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    vhost: Option<Path<String>>,
) -> ApiResult {
    all_bindings(&ctx, &me, vhost.as_deref().map(String::as_str))
}
