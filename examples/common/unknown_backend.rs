//! The error for a `--backend` name this build does not know (shared by every example).

/// "unknown backend `name`: use …", listing the backends this build has.
pub fn unknown_backend(name: &str) -> String {
    let mut known = vec!["ndarray"];
    known.extend(cfg!(feature = "flex").then_some("flex"));
    known.extend(cfg!(feature = "wgpu").then_some("wgpu"));
    known.extend(cfg!(feature = "cuda").then_some("cuda"));
    format!(
        "unknown backend `{name}`: use {} (flex, wgpu and cuda need their cargo features)",
        known.join(", ")
    )
}
