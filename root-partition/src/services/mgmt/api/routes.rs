//! The API's paths and their methods: one table ([`ROUTES`]) that the
//! router matches and that the OpenAPI document must list exactly (a test
//! holds the two together).

use alloc::vec::Vec;

/// The prefix of every path.
pub const PREFIX: &str = "/api/v1";

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/node`.
    Node,
    /// `/node/shutdown`.
    NodeShutdown,
    /// `/node/token`.
    NodeToken,
    /// `/vms`.
    Vms,
    /// `/vms/{name}`.
    Vm,
    /// `/vms/{name}/{action}` (start, stop, ...).
    VmAction(&'static str),
    /// `/vms/{name}/disks`.
    Disks,
    /// `/vms/{name}/disks/{lun}`.
    Disk,
    /// `/vms/{name}/console`.
    Console,
    /// `/jobs`.
    Jobs,
    /// `/jobs/{id}`.
    Job,
    /// `/jobs/{id}/cancel`.
    JobCancel,
    /// `/events`.
    Events,
}

/// The VM actions (`POST /vms/{name}/ACTION`), as the path spells them.
pub const ACTIONS: [&str; 7] = [
    "start", "stop", "turn-off", "pause", "resume", "save", "restore",
];

/// Every path template (below [`PREFIX`]), what it names and its methods.
pub const ROUTES: &[(&str, Route, &[&str])] = &[
    ("/node", Route::Node, &["GET"]),
    ("/node/shutdown", Route::NodeShutdown, &["POST"]),
    ("/node/token", Route::NodeToken, &["PUT"]),
    ("/vms", Route::Vms, &["GET", "POST"]),
    ("/vms/{name}", Route::Vm, &["GET", "DELETE"]),
    ("/vms/{name}/start", Route::VmAction("start"), &["POST"]),
    ("/vms/{name}/stop", Route::VmAction("stop"), &["POST"]),
    (
        "/vms/{name}/turn-off",
        Route::VmAction("turn-off"),
        &["POST"],
    ),
    ("/vms/{name}/pause", Route::VmAction("pause"), &["POST"]),
    ("/vms/{name}/resume", Route::VmAction("resume"), &["POST"]),
    ("/vms/{name}/save", Route::VmAction("save"), &["POST"]),
    ("/vms/{name}/restore", Route::VmAction("restore"), &["POST"]),
    ("/vms/{name}/disks", Route::Disks, &["GET", "POST"]),
    ("/vms/{name}/disks/{lun}", Route::Disk, &["DELETE"]),
    ("/vms/{name}/console", Route::Console, &["GET"]),
    ("/jobs", Route::Jobs, &["GET"]),
    ("/jobs/{id}", Route::Job, &["GET"]),
    ("/jobs/{id}/cancel", Route::JobCancel, &["POST"]),
    ("/events", Route::Events, &["GET"]),
];

/// A matched path: the route, its methods and its parameters in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matched<'p> {
    /// What it names.
    pub route: Route,
    /// The methods it has.
    pub methods: &'static [&'static str],
    /// The `{...}` segments' values, in order.
    pub params: Vec<&'p str>,
}

/// Whether `path` matches `template` (`{x}` takes one non-empty segment);
/// the parameters if so.
pub fn match_template<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                params.push(g);
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// The route of the full request path `path`, if any.
pub fn find(path: &str) -> Option<Matched<'_>> {
    let rest = path.strip_prefix(PREFIX)?;
    ROUTES.iter().find_map(|(template, route, methods)| {
        match_template(template, rest).map(|params| Matched {
            route: *route,
            methods,
            params,
        })
    })
}
