//! A SoftHSM2 token of one test's own: its own SOFTHSM2_CONF and token directory, keys
//! imported with softhsm2-util, so no test touches another's (or the machine's) tokens.

use std::path::PathBuf;
use std::process::Command;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const TOKEN: &str = "certgate";
/// Distinctive, so a test can tell that it never appears in a log.
pub const PIN: &str = "s3cret-pin";

pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub conf: String,
    pub pin_file: String,
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .expect("softhsm2-util must be installed (apt-get install softhsm2)");
    assert!(
        output.status.success(),
        "{command:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl SoftHsm {
    /// A fresh token labelled "certgate" with user PIN 1234.
    pub fn new() -> SoftHsm {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        let hsm = SoftHsm {
            conf: conf.to_string_lossy().into_owned(),
            pin_file: pin_file.to_string_lossy().into_owned(),
            dir,
        };
        run(hsm.command().args([
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ]));
        hsm
    }

    fn command(&self) -> Command {
        let mut command = Command::new("softhsm2-util");
        command.env("SOFTHSM2_CONF", &self.conf);
        command
    }

    /// Imports a PKCS#8 PEM private key as object `label` with id `id` (hex).
    pub fn import(&self, key_pem: &str, label: &str, id: &str) {
        let file: PathBuf = self.dir.path().join(format!("{label}.pem"));
        std::fs::write(&file, key_pem).unwrap();
        run(self.command().args([
            "--import",
            file.to_str().unwrap(),
            "--token",
            TOKEN,
            "--label",
            label,
            "--id",
            id,
            "--pin",
            PIN,
        ]));
        std::fs::remove_file(file).unwrap();
    }

    /// The URI of object `label`, the PIN read from a file.
    pub fn uri(&self, label: &str) -> String {
        format!(
            "pkcs11:token={TOKEN};object={label}?module-path={MODULE}&pin-source=file:{}",
            self.pin_file
        )
    }

    /// The environment certgate needs to see this token.
    pub fn env(&self) -> [(&str, &str); 1] {
        [("SOFTHSM2_CONF", self.conf.as_str())]
    }
}
