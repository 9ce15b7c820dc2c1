//! Image-folder classification datasets: `root/<split>/<class>/<image>`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::labels::{read_labels_file, LABELS_FILE};

/// File extensions read as images (lower-case comparison).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp"];

#[derive(Clone, Debug, PartialEq)]
pub struct ClassSample {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClassDataset {
    pub classes: Vec<String>,
    pub samples: Vec<ClassSample>,
}

impl ClassDataset {
    /// `root/<split>/<class>/*`. Class order: `root/labels.txt` when present, otherwise the sorted
    /// sub-folders of `root/train` (or of `root/<split>` when there is no `train`), so every
    /// split of one root maps names to the same indices.
    pub fn open(root: &Path, split: &str) -> Result<Self> {
        let labels = root.join(LABELS_FILE);
        let classes = if labels.is_file() {
            read_labels_file(&labels)?
        } else {
            let train = root.join("train");
            class_folders(&if train.is_dir() { train } else { root.join(split) })?
        };
        Self::from_folder(&root.join(split), classes)
    }

    /// Every image under `dir/<class>/` for the given class names; a sub-folder not named in
    /// `classes` is an error (it would silently drop data otherwise), a class without a folder
    /// simply has no samples in this split.
    pub fn from_folder(dir: &Path, classes: Vec<String>) -> Result<Self> {
        if classes.is_empty() {
            bail!("image folder `{}`: no class names", dir.display());
        }
        let mut samples = Vec::new();
        for name in class_folders(dir)? {
            let Some(label) = classes.iter().position(|c| *c == name) else {
                bail!("image folder `{}`: sub-folder `{name}` is not one of the classes {classes:?}", dir.display());
            };
            for path in image_files(&dir.join(&name))? {
                samples.push(ClassSample { path, label });
            }
        }
        if samples.is_empty() {
            bail!("image folder `{}` has no images (expected <class>/<image> files)", dir.display());
        }
        Ok(ClassDataset { classes, samples })
    }
}

/// Sorted names of the sub-directories of `dir`.
fn class_folders(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in read_dir(dir)? {
        if entry.is_dir() {
            let name = entry.file_name().and_then(|n| n.to_str()).with_context(|| {
                format!("image folder `{}`: sub-folder name is not UTF-8: {}", dir.display(), entry.display())
            })?;
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        bail!("image folder `{}` has no class sub-folders", dir.display());
    }
    names.sort();
    Ok(names)
}

/// Sorted image files directly in `dir`.
pub(crate) fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = read_dir(dir)?.into_iter().filter(|p| p.is_file() && is_image(p)).collect();
    files.sort();
    Ok(files)
}

pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading directory `{}`", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.with_context(|| format!("reading directory `{}`", dir.display()))?.path());
    }
    Ok(paths)
}
