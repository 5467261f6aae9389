//! Deciding whether an applied manifest changes anything: the "spec" of a resource is
//! everything except its status and the meta fields the server manages.

use voiyd_messages::manifest::AnyResource;
use voiyd_messages::Resource;

pub use voiyd_messages::diff::strip_managed;

/// Whether two resources have the same user-written content.
pub fn spec_equal<R: Resource>(a: &R, b: &R) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    strip_managed(&mut a);
    strip_managed(&mut b);
    a == b
}

/// [`strip_managed`] for any kind.
pub fn strip_any(r: &mut AnyResource) {
    match r {
        AnyResource::Task(x) => strip_managed(x),
        AnyResource::Node(x) => strip_managed(x),
        AnyResource::Volume(x) => strip_managed(x),
        AnyResource::ContainerSet(x) => strip_managed(x),
        AnyResource::Lease(x) => strip_managed(x),
        AnyResource::Job(x) => strip_managed(x),
        AnyResource::Secret(x) => strip_managed(x),
    }
}

/// [`spec_equal`] for any kind, after bringing both sides to canonical form (so an
/// omitted default equals the value the server filled in); different kinds are never equal.
pub fn any_spec_equal(a: &AnyResource, b: &AnyResource) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    for r in [&mut a, &mut b] {
        strip_any(r);
        crate::checks::normalize(r);
    }
    a == b
}
