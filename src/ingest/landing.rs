//! Finding the landing files of one source for one date.

use chrono::NaiveDate;
use object_store::path::Path;

use crate::config::SourceContract;
use crate::config::contract::expand_as_of;
use crate::error::Result;
use crate::warehouse::Location;

#[derive(Debug, Clone)]
pub struct LandingFile {
    pub key: Path,
    /// Relative to the landing root: how files are named in rejects, ledgers and messages.
    pub name: String,
    pub size: u64,
}

/// The files matching the source's pattern for `as_of`, sorted by name; `Err(message)` when
/// there are none (the message names the folder and what, if anything, is in it).
pub async fn find(
    landing: &Location,
    contract: &SourceContract,
    as_of: NaiveDate,
) -> Result<Result<Vec<LandingFile>, String>> {
    let pattern_text = match expand_as_of(&contract.path.value, as_of) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let literal_end = pattern_text.find(['*', '?', '[', '{']).unwrap_or(pattern_text.len());
    let folder = match pattern_text[..literal_end].rfind('/') {
        Some(slash) => &pattern_text[..slash],
        None => "",
    };
    let pattern = match glob::Pattern::new(&pattern_text) {
        Ok(p) => p,
        Err(e) => return Ok(Err(format!("`{pattern_text}` is not a valid glob: {e}"))),
    };
    let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
    let objects = landing.list(folder).await?;
    if objects.is_empty() {
        return Ok(Err(format!("no landing folder for {as_of}: nothing under {}/{folder}", landing.display)));
    }
    let mut files = Vec::new();
    let mut others = Vec::new();
    for object in objects {
        let name = landing.relative(&object.location);
        if pattern.matches_with(&name, options) {
            files.push(LandingFile { key: object.location, name, size: object.size });
        } else {
            others.push(name);
        }
    }
    if files.is_empty() {
        others.truncate(5);
        return Ok(Err(format!(
            "no file matches {pattern_text} in {}/{folder} (found {})",
            landing.display,
            others.join(", ")
        )));
    }
    Ok(Ok(files))
}

/// On local disk, refuse a landing file that resolves (through a symbolic link, of the file or of
/// a folder above it) outside the landing root, before anything of it is read: a link to
/// `/etc/passwd` must not end up quoted in a reject or an error. Object stores have no links.
pub fn check_inside(landing: &Location, key: &Path) -> std::result::Result<(), String> {
    if landing.store_url.scheme() != "file" {
        return Ok(());
    }
    let local = |key: &Path| url::Url::parse(&landing.url_of(key)).ok()?.to_file_path().ok();
    let (Some(root), Some(file)) = (local(&landing.root), local(key)) else { return Ok(()) };
    let root = root.canonicalize().map_err(|e| format!("cannot resolve the landing root: {e}"))?;
    match file.canonicalize() {
        Ok(resolved) if resolved.starts_with(&root) => Ok(()),
        Ok(_) => Err("resolves outside the landing root (a symbolic link?): refused, not read".to_string()),
        Err(e) => Err(format!("cannot resolve: {e}")),
    }
}
