//! Progress bars on standard error: indicatif's with the crate feature `progress`, none
//! without it (then [`Bar`] does nothing and costs nothing).

/// A progress bar of `len` steps drawn with indicatif's `template`, or a hidden one unless
/// `visible` (a template indicatif rejects draws the default style).
#[cfg(feature = "progress")]
#[cfg_attr(not(feature = "zca"), allow(dead_code))]
pub(crate) fn bar(visible: bool, len: u64, template: &str) -> Bar {
    if !visible {
        return Bar::hidden();
    }
    let bar = Bar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

#[cfg(feature = "progress")]
pub(crate) use indicatif::ProgressBar as Bar;

/// Without the feature `progress`, no bar is ever drawn.
#[cfg(not(feature = "progress"))]
#[cfg_attr(not(feature = "zca"), allow(dead_code))]
pub(crate) fn bar(_visible: bool, _len: u64, _template: &str) -> Bar {
    Bar
}

/// A progress bar that draws nothing (the crate is built without the feature `progress`).
#[cfg(not(feature = "progress"))]
#[derive(Debug)]
pub(crate) struct Bar;

// Only the ZCA fit draws a bar without `progress` (`download` and `train` turn it on).
#[cfg(not(feature = "progress"))]
#[cfg_attr(not(feature = "zca"), allow(dead_code))]
impl Bar {
    /// Counts `steps` more steps done.
    pub(crate) fn inc(&self, _steps: u64) {}
    /// Marks the bar finished and clears it.
    pub(crate) fn finish_and_clear(&self) {}
}
