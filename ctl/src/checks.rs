//! Client-side checks and formats shared with the server (from `voiyd-messages`), so
//! mistakes are reported before anything is sent.

use voiyd_messages::manifest::AnyResource;
use voiyd_messages::{quantity, selector::Selector, validate};

/// Validates a resource the way the server will; the message names every bad field.
pub fn validate(r: &AnyResource) -> Result<(), String> {
    validate::validate_any(r).map_err(|e| e.to_string())
}

/// Checks a CPU quantity (`500m`, `1.5`).
pub fn cpu(text: &str) -> Result<(), String> {
    quantity::parse_cpu(text)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks a memory quantity (`256Mi`, `1G`).
pub fn memory(text: &str) -> Result<(), String> {
    quantity::parse_memory(text)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks a label selector.
pub fn selector(text: &str) -> Result<(), String> {
    Selector::parse(text).map(drop).map_err(|e| e.to_string())
}

/// Millicores as a CPU quantity (`2`, `1500m`).
pub fn format_cpu(millis: u64) -> String {
    quantity::format_cpu(millis)
}

/// For tables: binary units with at most one decimal (`23.5Gi`), unlike the exact
/// (round-trippable) form of `quantity::format_memory`.
pub fn format_memory(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let v = bytes as f64 / size as f64;
            let text = format!("{v:.1}");
            return format!("{}{unit}", text.strip_suffix(".0").unwrap_or(&text));
        }
    }
    bytes.to_string()
}

/// Brings a resource to the canonical form the server stores (e.g. `protocol: tcp`
/// filled in), so comparing a manifest with the stored copy sees only real changes.
pub fn normalize(r: &mut AnyResource) {
    match r {
        AnyResource::Task(t) => validate::normalize_task(t),
        AnyResource::ContainerSet(s) => {
            if let Some(t) = s.template.as_mut() {
                validate::normalize_task_config(t);
            }
        }
        AnyResource::Job(j) => {
            if let Some(t) = j.template.as_mut() {
                validate::normalize_task_config(t);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod memory_display_tests {
    #[test]
    fn short_binary_units() {
        assert_eq!(super::format_memory(24_684_096 * 1024), "23.5Gi");
        assert_eq!(super::format_memory(64 << 20), "64Mi");
        assert_eq!(super::format_memory(0), "0");
        assert_eq!(super::format_memory(512), "512");
    }
}
