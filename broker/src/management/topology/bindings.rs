//! Bindings over HTTP: the binding lists of a queue, of an exchange as source or destination,
//! and between two objects; creating a binding (`POST`, checked as `queue.bind` is) and deleting
//! one named by its `properties_key`.

use super::*;
use crate::vhost::Topology;

pub(super) async fn queue_bindings(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (vh, _) = find_queue(&ctx, &me, &vhost, &name)?;
    Ok(Json(Value::Array(bindings_of(&vh, |_, d, k| {
        k == "queue" && d == name
    }))))
}

/// The exchange `name` of a vhost the caller entered, or 404.
pub(super) fn entered_exchange(
    ctx: &Ctx,
    me: &Caller,
    vhost: &str,
    name: &str,
) -> Result<Arc<VHost>, ApiError> {
    let vh = me.enter(ctx, vhost)?;
    if !vh.read().exchanges.contains_key(exchange_name(name)) {
        return Err(ApiError::not_found(format!(
            "no exchange '{name}' in vhost '{vhost}'"
        )));
    }
    Ok(vh)
}

pub(super) async fn source_bindings(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = entered_exchange(&ctx, &me, &vhost, &name)?;
    let name = exchange_name(&name);
    Ok(Json(Value::Array(bindings_of(&vh, |s, _, _| s == name))))
}

pub(super) async fn destination_bindings(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = entered_exchange(&ctx, &me, &vhost, &name)?;
    Ok(Json(Value::Array(bindings_of(&vh, |_, d, k| {
        k == "exchange" && d == name
    }))))
}

/// The destination a binding path names: `q` or `e`.
pub(super) fn destination(kind: &str, name: &str) -> Result<Destination, ApiError> {
    match kind {
        "q" => Ok(Destination::Queue(name.to_owned())),
        "e" => Ok(Destination::Exchange(name.to_owned())),
        _ => Err(ApiError::not_found(format!(
            "no such destination type '{kind}'"
        ))),
    }
}

/// 404 unless both ends of a binding exist in `topo` (the topology of vhost `vhost`): the
/// source exchange, then the destination queue or exchange.
fn ends_exist(
    topo: &Topology,
    vhost: &str,
    source: &str,
    dest: &Destination,
) -> Result<(), ApiError> {
    if !topo.exchanges.contains_key(source) {
        return Err(ApiError::not_found(format!(
            "no exchange '{source}' in vhost '{vhost}'"
        )));
    }
    let exists = match dest {
        Destination::Queue(q) => topo.queues.contains_key(q),
        Destination::Exchange(e) => topo.exchanges.contains_key(e),
    };
    if !exists {
        return Err(ApiError::not_found(format!(
            "no binding destination in vhost '{vhost}'"
        )));
    }
    Ok(())
}

/// Checks that both ends exist in `vh` and that the caller may bind them: write on the
/// destination, read on the source (RabbitMQ's `queue.bind` rules).
pub(super) fn check_binding(
    ctx: &Ctx,
    me: &Caller,
    vh: &VHost,
    source: &str,
    dest: &Destination,
) -> Result<(), ApiError> {
    ends_exist(&vh.read(), &vh.name, source, dest)?;
    let (kind, name) = match dest {
        Destination::Queue(q) => (ResourceKind::Queue, q),
        Destination::Exchange(e) => (ResourceKind::Exchange, e),
    };
    me.require_access(ctx, &vh.name, Access::Write, kind, name)?;
    me.require_access(ctx, &vh.name, Access::Read, ResourceKind::Exchange, source)
}

pub(super) async fn bindings_between(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = me.enter(&ctx, &vhost)?;
    let source = exchange_name(&source);
    let kind = match destination(&kind, &dest)? {
        Destination::Queue(_) => "queue",
        Destination::Exchange(_) => "exchange",
    };
    Ok(Json(Value::Array(bindings_of(&vh, |s, d, k| {
        s == source && d == dest && k == kind
    }))))
}

/// The vhost and destination of a binding path the caller may bind or unbind (not from the
/// default exchange; see [`check_binding`]).
pub(super) fn binding_ends(
    ctx: &Ctx,
    me: &Caller,
    vhost: &str,
    source: &str,
    kind: &str,
    dest: &str,
) -> Result<(Arc<VHost>, Destination), ApiError> {
    let vh = me.enter(ctx, vhost)?;
    let source = exchange_name(source);
    if source.is_empty() {
        return Err(ApiError::forbidden(
            "operation not permitted on the default exchange",
        ));
    }
    let dest = destination(kind, dest)?;
    check_binding(ctx, me, &vh, source, &dest)?;
    Ok((vh, dest))
}

/// `POST /api/bindings/...` body.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PostBinding {
    #[serde(default)]
    pub(super) routing_key: String,
    #[serde(default)]
    pub(super) arguments: Value,
}

pub(super) async fn post_binding(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    body: Body<PostBinding>,
) -> Result<Response, ApiError> {
    let Json(b) = body?;
    let (vh, dest) = binding_ends(&ctx, &me, &vhost, &source, &kind, &dest)?;
    let source = exchange_name(&source);
    let arguments = field_table::from_json(&b.arguments).map_err(ApiError::bad_request)?;
    let props = properties_key(&b.routing_key, &arguments);
    bind(&vh, source, dest, b.routing_key, arguments).await?;
    let mut resp = StatusCode::CREATED.into_response();
    if let Ok(location) = header::HeaderValue::from_str(&crate::management::percent_encode(&props))
    {
        resp.headers_mut().insert(header::LOCATION, location);
    }
    Ok(resp)
}

/// Adds a binding (idempotent) and persists it when both ends are durable.
pub(crate) async fn bind(
    vh: &VHost,
    source: &str,
    destination: Destination,
    routing_key: String,
    arguments: FieldTable,
) -> Result<(), ApiError> {
    if routing_key.len() > 255 {
        return Err(ApiError::bad_request("routing key longer than 255 bytes"));
    }
    let commit = {
        let mut topo = vh.write();
        ends_exist(&topo, &vh.name, source, &destination)?;
        let binding = Binding {
            destination,
            routing_key,
            arguments,
        };
        vh.add_binding(&mut topo, source, binding)
    };
    durable_after(commit).await
}

/// Finds the binding `props` names between `source` and `dest`.
pub(super) fn find_binding(
    vh: &VHost,
    source: &str,
    dest: &Destination,
    props: &str,
) -> Result<Binding, ApiError> {
    let topo = vh.read();
    topo.exchanges
        .get(source)
        .and_then(|x| {
            x.bindings.iter().find(|b| {
                &b.destination == dest && properties_key(&b.routing_key, &b.arguments) == props
            })
        })
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such binding"))
}

pub(super) async fn binding(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let vh = me.enter(&ctx, &vhost)?;
    let source = exchange_name(&source);
    let dest = destination(&kind, &dest)?;
    let b = find_binding(&vh, source, &dest, &props)?;
    Ok(Json(binding_json(&vh.name, source, &b)))
}

pub(super) async fn delete_binding(
    State(ctx): State<Ctx>,
    Extension(me): Me,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let (vh, dest) = binding_ends(&ctx, &me, &vhost, &source, &kind, &dest)?;
    let source = exchange_name(&source);
    let b = find_binding(&vh, source, &dest, &props)?;
    let commit = {
        let mut topo = vh.write();
        vh.remove_binding(&mut topo, source, &b)
    };
    durable_after(commit).await?;
    Ok(StatusCode::NO_CONTENT)
}
