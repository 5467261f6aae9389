//! The `image` field: the one reference grammar of [`crate::image`], with messages that name the field.

use super::*;

pub(super) fn check_image(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("required".to_string());
    }
    if image.len() > MAX_IMAGE_LEN {
        return Err(format!(
            "is {} characters long, more than {MAX_IMAGE_LEN}",
            image.len()
        ));
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{} contains {}: an image reference has no spaces or control characters",
            shown(image),
            shown(&c.to_string())
        ));
    }
    crate::image::parse(image).map(drop).map_err(|e| {
        format!(
            "{} is not an image reference ({}): write e.g. busybox, registry:5000/team/app:1.0 or app@sha256:<64 hex digits>",
            shown(image),
            e.reason
        )
    })
}
