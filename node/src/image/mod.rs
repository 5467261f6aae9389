//! Container images on the node: references, registry access, pulling and unpacking into containerd.

pub mod auth;
pub mod gc;
pub mod oci;
pub mod pull;
pub mod registry;

pub use auth::{AuthError, RegistryAuth};
pub use oci::ImageConfig;
pub use pull::{
    image_config, image_config_in, pull, remove_image, snapshot_exists, PullError, PullOptions,
    PullPolicy, PullProgress, PulledImage,
};
pub use registry::{RegistryClient, RegistryError};
pub use voiyd_messages::image::{Reference, ReferenceError};
