//! `conveyor-host new NAME --lang rust|python|js [DIR]`: a driver project that builds with
//! one command (`./build.sh`) and passes `conveyor-host test` on its own fixture. The binary
//! carries the SDKs and the WIT world (compiled in from `guest-sdk/` and `wit/`) and writes
//! them into the project, so the project builds without a checkout of this repository: the
//! Rust SDK as a path dependency, the Python and JavaScript modules beside the app.

use std::path::{Path, PathBuf};

/// The languages a project can be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with cargo and the wasm32-wasip2 target.
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with jco (QuickJS).
    Js,
}

/// Why a project was not made.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a driver's (and package's) name.
    #[error(
        "{0:?} cannot name a driver: use lowercase letters, digits and '-', starting with a letter"
    )]
    BadName(String),
    /// The directory is there and not empty.
    #[error("{} already exists and is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// Writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

const WIT: &str = include_str!("../../../wit/driver.wit");
const RUST_SDK: &str = include_str!("../../../guest-sdk/src/lib.rs");
const PYTHON_SDK: &str = include_str!("../../../guest-sdk/python/conveyor_driver.py");
const JS_SDK: &str = include_str!("../../../guest-sdk/js/conveyor-driver.js");
/// The workspace's lock file: the generated Rust project resolves its dependencies to the
/// versions this repository builds and tests with (cargo drops the entries it does not need).
const CARGO_LOCK: &str = include_str!("../../../Cargo.lock");

/// A file of the project: its path in the project, its text, and whether it is a script.
struct File {
    path: String,
    text: String,
    executable: bool,
}

/// Makes the project `name` in `dir` (created; it must be empty if it exists); returns the
/// files written, relative to `dir`.
pub fn scaffold(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::NotEmpty(dir.to_path_buf()));
    }
    let files = files(name, lang);
    let mut written = Vec::new();
    for f in files {
        let path = dir.join(&f.path);
        let write_error = |source| ScaffoldError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_error)?;
        }
        std::fs::write(&path, &f.text).map_err(write_error)?;
        if f.executable {
            make_executable(&path).map_err(write_error)?;
        }
        written.push(PathBuf::from(f.path));
    }
    Ok(written)
}

/// A driver name is a NATS subject token and, for Rust, a package name: lowercase letters,
/// digits and `-`, starting with a letter.
fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.to_string()))
    }
}

/// The project's files, with the name filled in.
fn files(name: &str, lang: Lang) -> Vec<File> {
    let kind = format!("{name}-task");
    let (language, source, sdk) = match lang {
        Lang::Rust => ("Rust", "`src/lib.rs`", "`conveyor-driver/`"),
        Lang::Python => ("Python", "`app.py`", "`conveyor_driver.py`"),
        Lang::Js => ("JavaScript", "`app.js`", "`conveyor-driver.js`"),
    };
    let lang_word = match lang {
        Lang::Rust => "rust",
        Lang::Python => "python",
        Lang::Js => "js",
    };
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{kind}}", &kind)
            .replace("{{Type}}", &type_name(name))
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{language}}", language)
            .replace("{{lang}}", lang_word)
            .replace("{{source}}", source)
            .replace("{{sdk}}", sdk)
    };
    let file = |path: &str, text: &str| File {
        path: path.to_string(),
        text: fill(text),
        executable: false,
    };
    let script = |path: &str, text: &str| File {
        path: path.to_string(),
        text: fill(text),
        executable: true,
    };
    // The SDKs are written as they are, not filled in.
    let verbatim = |path: &str, text: &str| File {
        path: path.to_string(),
        text: text.to_string(),
        executable: false,
    };
    let mut out = vec![
        verbatim("wit/driver.wit", WIT),
        file("README.md", include_str!("templates/common/README.md")),
        file(
            "fixtures/create.toml",
            include_str!("templates/common/create.toml"),
        ),
        file(
            "resources/definition.json",
            include_str!("templates/common/definition.json"),
        ),
        file(
            "resources/resource.json",
            include_str!("templates/common/resource.json"),
        ),
    ];
    match lang {
        Lang::Rust => out.extend([
            file("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
            verbatim("Cargo.lock", CARGO_LOCK),
            file("src/lib.rs", include_str!("templates/rust/lib.rs")),
            script("build.sh", include_str!("templates/rust/build.sh")),
            verbatim(
                "conveyor-driver/Cargo.toml",
                include_str!("templates/rust/sdk.Cargo.toml"),
            ),
            // The SDK reads the WIT from `../wit`, beside its crate: the project's `wit/`.
            verbatim("conveyor-driver/src/lib.rs", RUST_SDK),
            verbatim(".gitignore", "/target\n*.wasm\n"),
        ]),
        Lang::Python => out.extend([
            file("app.py", include_str!("templates/python/app.py")),
            verbatim("conveyor_driver.py", PYTHON_SDK),
            script("build.sh", include_str!("templates/python/build.sh")),
            verbatim(".gitignore", "__pycache__/\n*.wasm\n"),
        ]),
        Lang::Js => out.extend([
            file("app.js", include_str!("templates/js/app.js")),
            verbatim("conveyor-driver.js", JS_SDK),
            file("package.json", include_str!("templates/js/package.json")),
            file("build.mjs", include_str!("templates/js/build.mjs")),
            verbatim(
                "bundle.config.mjs",
                include_str!("templates/js/bundle.config.mjs"),
            ),
            script("build.sh", include_str!("templates/js/build.sh")),
            verbatim(".gitignore", "node_modules/\n*.wasm\n"),
        ]),
    }
    out
}

/// `my-driver` as a Rust type name: `MyDriver`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(unix)]
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("hello-2").is_ok());
        for bad in ["", "Hello", "2x", "a.b", "a b", "a_b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("my-first-driver"), "MyFirstDriver");
    }

    #[test]
    fn every_language_gets_its_sdk_wit_and_fixture() {
        for (lang, sdk) in [
            (Lang::Rust, "conveyor-driver/src/lib.rs"),
            (Lang::Python, "conveyor_driver.py"),
            (Lang::Js, "conveyor-driver.js"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let written = scaffold("hello", lang, dir.path()).unwrap();
            for f in [sdk, "wit/driver.wit", "fixtures/create.toml", "build.sh"] {
                assert!(
                    written.contains(&PathBuf::from(f)),
                    "{lang:?}: {f} in {written:?}"
                );
            }
            for f in &written {
                let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
                if !f.ends_with("driver.wit")
                    && !f.ends_with("Cargo.lock")
                    && f.as_path() != Path::new(sdk)
                {
                    assert!(
                        !text.contains("{{"),
                        "{lang:?}: {} left a placeholder",
                        f.display()
                    );
                }
            }
            // The fixture reads.
            let fixture = dir.path().join("fixtures/create.toml");
            crate::author::fixture::Fixture::read(&fixture).unwrap();
            // A second time into the same directory is refused.
            assert!(matches!(
                scaffold("hello", lang, dir.path()),
                Err(ScaffoldError::NotEmpty(_))
            ));
        }
    }
}
