//! Checkpoints that are never half-written, and resuming from the newest complete one.

use std::path::{Path, PathBuf};

use burn::{
    lr_scheduler::LrScheduler,
    module::Module,
    optim::Optimizer,
    record::{FileRecorder, Recorder, RecorderError},
    tensor::{Device, backend::Backend},
};
use burn_train::{Learner, LearningComponentsTypes};
use serde::{Serialize, de::DeserializeOwned};

/// The names burn-train's file checkpointer gives the three records of an epoch, under
/// `<directory>/checkpoint/`: `model-<epoch>`, `optim-<epoch>` and `scheduler-<epoch>`.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// Why a checkpoint could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint folder could not be listed.
    #[error("cannot list the checkpoints in {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No epoch has all three files (model, optimizer, scheduler).
    #[error("no complete checkpoint (model, optim and scheduler files of one epoch) in {0}")]
    NotFound(PathBuf),
    /// A record file is missing, corrupt or of another model or optimizer.
    #[error("cannot load the {part} checkpoint of epoch {epoch} from {path}: {message}")]
    Record {
        /// `model`, `optim` or `scheduler`.
        part: &'static str,
        /// The epoch.
        epoch: usize,
        /// The file, without its extension.
        path: PathBuf,
        /// The recorder's message.
        message: String,
    },
}

/// A [`FileRecorder`] that writes through `inner` into a temporary file in the same folder and
/// renames it into place, so a crash or a full disk never leaves a half-written record under
/// the final name. Loading is `inner`'s.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::module::Module;
/// use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
/// use burn_qnn::{learner::AtomicFileRecorder, nn::BinaryLinearConfig};
///
/// let dir = tempfile::tempdir()?;
/// let recorder = AtomicFileRecorder::new(NamedMpkFileRecorder::<FullPrecisionSettings>::new());
/// let layer = BinaryLinearConfig::new(4, 2).init::<NdArray>(&Default::default());
/// layer.clone().save_file(dir.path().join("layer"), &recorder)?;
/// let names: Vec<_> = std::fs::read_dir(dir.path())?.map(|e| e.unwrap().file_name()).collect();
/// assert_eq!(names, ["layer.mpk"]);
/// let loaded = layer.load_file(dir.path().join("layer"), &recorder, &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AtomicFileRecorder<FR> {
    inner: FR,
}

impl<FR> AtomicFileRecorder<FR> {
    /// Writes with `inner`.
    pub fn new(inner: FR) -> Self {
        Self { inner }
    }
}

impl<B: Backend, FR: FileRecorder<B>> Recorder<B> for AtomicFileRecorder<FR> {
    type Settings = FR::Settings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        let extension = <FR as FileRecorder<B>>::file_extension();
        file.set_extension(extension);
        let name = file
            .file_stem()
            .ok_or_else(|| RecorderError::Unknown(format!("{} has no file name", file.display())))?
            .to_string_lossy()
            .into_owned();
        let partial = file.with_file_name(format!(".{name}-partial-{}", std::process::id()));
        let mut written = partial.clone();
        written.set_extension(extension);
        let result = self.inner.save_item(item, partial).and_then(|()| {
            std::fs::rename(&written, &file).map_err(|e| {
                RecorderError::Unknown(format!("cannot rename into {}: {e}", file.display()))
            })
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&written);
        }
        result
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        self.inner.load_item(file)
    }
}

impl<B: Backend, FR: FileRecorder<B>> FileRecorder<B> for AtomicFileRecorder<FR> {
    fn file_extension() -> &'static str {
        FR::file_extension()
    }
}

/// The newest epoch with a complete checkpoint (model, optimizer and scheduler files, with
/// `extension`) that burn-train's file checkpointer wrote under `directory/checkpoint`, the
/// `directory` given to `SupervisedTraining::new`; `None` if there is no checkpoint folder or
/// no complete epoch in it.
///
/// # Errors
/// If the checkpoint folder exists but cannot be listed.
pub fn last_checkpoint(
    directory: &Path,
    extension: &str,
) -> Result<Option<usize>, CheckpointError> {
    let folder = directory.join("checkpoint");
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: folder,
                source,
            });
        }
    };
    let mut found: std::collections::BTreeMap<usize, usize> = Default::default();
    for entry in entries {
        let entry = entry.map_err(|source| CheckpointError::Io {
            path: folder.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_suffix(extension))
            .and_then(|n| n.strip_suffix('.'))
        else {
            continue;
        };
        for part in PARTS {
            if let Some(epoch) = stem
                .strip_prefix(part)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|n| n.parse::<usize>().ok())
            {
                *found.entry(epoch).or_default() += 1;
            }
        }
    }
    Ok(found
        .into_iter()
        .rev()
        .find(|&(_, parts)| parts == PARTS.len())
        .map(|(epoch, _)| epoch))
}

/// Loads the checkpoint of `epoch` under `directory/checkpoint` (model, optimizer state and
/// learning-rate scheduler, as burn-train's file checkpointer wrote them with `recorder`) into
/// `learner`. burn-train's own loading panics on a missing or corrupt file; call this first to
/// get an error instead, then pass the epoch to `SupervisedTraining::checkpoint`.
///
/// # Errors
/// [`CheckpointError::Record`] if a file is missing, corrupt or does not match the learner's
/// model or optimizer.
pub fn restore_checkpoint<LC, FR>(
    mut learner: Learner<LC>,
    directory: &Path,
    epoch: usize,
    recorder: &FR,
    device: &Device<LC::Backend>,
) -> Result<Learner<LC>, CheckpointError>
where
    LC: LearningComponentsTypes,
    FR: FileRecorder<LC::Backend>,
{
    let folder = directory.join("checkpoint");
    let path = |part: &str| folder.join(format!("{part}-{epoch}"));
    let error = |part: &'static str, e: RecorderError| CheckpointError::Record {
        part,
        epoch,
        path: path(part),
        message: e.to_string(),
    };
    let model: <LC::TrainingModel as Module<LC::Backend>>::Record = recorder
        .load(path(PARTS[0]), device)
        .map_err(|e| error(PARTS[0], e))?;
    let optim: <LC::Optimizer as Optimizer<LC::TrainingModel, LC::Backend>>::Record = recorder
        .load(path(PARTS[1]), device)
        .map_err(|e| error(PARTS[1], e))?;
    let scheduler: <LC::LrScheduler as LrScheduler>::Record<LC::Backend> = recorder
        .load(path(PARTS[2]), device)
        .map_err(|e| error(PARTS[2], e))?;
    learner.load_model(model);
    learner.load_optim(optim);
    learner.load_scheduler(scheduler);
    Ok(learner)
}

/// Loads the model of the checkpoint of `epoch` under `directory/checkpoint` (the
/// `model-<epoch>` file burn-train's file checkpointer wrote with `recorder`) into `model`, on
/// any backend (e.g. the inner backend of the training one, for evaluation). With
/// [`best_valid_epoch`](super::best_valid_epoch) this gives the best-validation model.
///
/// # Errors
/// [`CheckpointError::Record`] if the file is missing, corrupt or of another model.
pub fn load_checkpoint_model<B, M, FR>(
    model: M,
    directory: &Path,
    epoch: usize,
    recorder: &FR,
    device: &Device<B>,
) -> Result<M, CheckpointError>
where
    B: Backend,
    M: Module<B>,
    FR: FileRecorder<B>,
{
    let path = directory
        .join("checkpoint")
        .join(format!("{}-{epoch}", PARTS[0]));
    let record = recorder
        .load(path.clone(), device)
        .map_err(|e| CheckpointError::Record {
            part: PARTS[0],
            epoch,
            path,
            message: e.to_string(),
        })?;
    Ok(model.load_record(record))
}
