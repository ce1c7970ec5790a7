//! Embeds the operator UI (`ui/web/`) when the `ui` feature is on: each file with its
//! content type, a strong ETag and, where it is smaller, only its gzip form, computed here, so the gateway build
//! needs no Node toolchain and the binary serves without compressing at run time.
//!
//! `index.html` may reference assets as `name?v=@`; the marker becomes the asset's ETag so
//! those URLs can be cached as immutable.
//!
//! Release binaries on Linux are linked without unwind tables (`discard_unwind_tables`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[path = "src/api/ui_mime.rs"]
mod ui_mime;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=ui/web");
    println!("cargo:rerun-if-env-changed=PEAT_GATEWAY_BUILD_ID");
    discard_unwind_tables();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let table = if std::env::var_os("CARGO_FEATURE_UI").is_some() {
        embed(Path::new("ui/web"), &out)
    } else {
        String::from("&[]")
    };
    let code = format!("pub(crate) static ASSETS: &[EmbeddedAsset] = {table};\n");
    if let Err(e) = std::fs::write(out.join("ui_assets.rs"), code) {
        panic!("writing the UI asset table to OUT_DIR: {e}");
    }
}

/// The release profile aborts on panic (Cargo.toml), so nothing unwinds through the binary: its
/// unwind tables (`.eh_frame` and its index, a sixth of the file) would serve only backtraces,
/// which a stripped binary cannot name. The precompiled standard library makes every function
/// that calls into it carry an entry, so the compiler cannot leave them out; the linker drops
/// them. A panic still prints its message and aborts. ARM 32-bit unwinds with `.ARM.exidx`,
/// which stays.
fn discard_unwind_tables() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("PROFILE") != "release" || env("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let script = Path::new(&env("CARGO_MANIFEST_DIR")).join("build/discard-unwind-tables.ld");
    println!("cargo:rerun-if-changed=build/discard-unwind-tables.ld");
    println!("cargo:rustc-link-arg-bins=-Wl,--no-eh-frame-hdr");
    println!("cargo:rustc-link-arg-bins=-T");
    println!("cargo:rustc-link-arg-bins={}", script.display());
}

struct File {
    rel: String,
    bytes: Vec<u8>,
}

fn embed(root: &Path, out: &Path) -> String {
    let mut files = Vec::new();
    walk(root, root, &mut files);
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    // Assets first, so the page can carry their ETags.
    let mut tags: Vec<(String, String)> = Vec::new();
    let (pages, assets): (Vec<File>, Vec<File>) =
        files.into_iter().partition(|f| f.rel.ends_with(".html"));
    let mut rows = String::from("&[\n");
    for f in assets.into_iter().chain(pages) {
        let bytes = if f.rel.ends_with(".html") {
            let mut text = String::from_utf8_lossy(&f.bytes).into_owned();
            for (name, tag) in &tags {
                text = text.replace(&format!("{name}?v=@"), &format!("{name}?v={tag}"));
            }
            text.into_bytes()
        } else {
            f.bytes
        };
        let tag = hex16(&Sha256::digest(&bytes));
        tags.push((f.rel.clone(), tag.clone()));
        let stem = f.rel.replace(['/', '.'], "_");
        // One copy per file: gzip where it is smaller (inflated for the rare client without
        // gzip), else the file as written.
        let gz = gzip(&bytes);
        let gzipped = gz.len() + 64 < bytes.len();
        let path = out.join(format!("ui_{stem}{}", if gzipped { ".gz" } else { "" }));
        write(&path, if gzipped { &gz } else { &bytes });
        let _ = writeln!(
            rows,
            "    EmbeddedAsset {{ path: {:?}, mime: {:?}, etag: {:?}, body: include_bytes!({:?}), gzipped: {gzipped} }},",
            f.rel,
            ui_mime::for_name(&f.rel),
            tag,
            path.display().to_string(),
        );
    }
    rows.push(']');
    rows
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<File>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => panic!("the `ui` feature embeds {}: {e}", dir.display()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, files);
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        let rel = path
            .strip_prefix(root)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_default();
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("reading UI file {}: {e}", path.display()));
        files.push(File { rel, bytes });
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    // No file name or time in the header: the output depends on the input alone.
    let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    if let Err(e) = enc.write_all(bytes) {
        panic!("compressing the UI: {e}");
    }
    enc.finish()
        .unwrap_or_else(|e| panic!("compressing the UI: {e}"))
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(e) = std::fs::write(path, bytes) {
        panic!("writing {}: {e}", path.display());
    }
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
