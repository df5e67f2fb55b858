//! Local secrets for the dev and test stacks, written once per checkout into `edge/.dev.vars`.

use std::path::Path;

use crate::step::{fail, note, Result};

/// Secrets for local runs, made once per checkout: the room token key and the edge↔SFU control key.
pub struct DevSecrets {
    pub control_secret: String,
    /// Shared by the edge (it makes TURN credentials) and the local coturn.
    pub turn_secret: String,
}

pub fn dev_vars(root: &Path) -> Result<DevSecrets> {
    let path = root.join("edge/.dev.vars");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let get = |k: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("{k}="))
                .map(|v| v.trim_matches('"').to_string())
        })
    };
    if let (Some(_), Some(control), Some(turn)) = (
        get("ROOM_TOKEN_SECRET"),
        get("CONTROL_SECRET"),
        get("TURN_SECRET"),
    ) {
        return Ok(DevSecrets {
            control_secret: control,
            turn_secret: turn,
        });
    }
    let control = get("CONTROL_SECRET")
        .map(Ok)
        .unwrap_or_else(|| random_hex(32))?;
    let turn = random_hex(32)?;
    let body = format!(
        "# Local-only secrets written by `cargo xtask`; never used in production (wrangler secret put).\nROOM_TOKEN_SECRET=\"{}\"\nCONTROL_SECRET=\"{control}\"\nTURN_SECRET=\"{turn}\"\n",
        get("ROOM_TOKEN_SECRET").map(Ok).unwrap_or_else(|| random_hex(32))?
    );
    std::fs::write(&path, body).map_err(|e| {
        fail(
            "dev secrets",
            format!("cannot write {}: {e}", path.display()),
            "",
        )
    })?;
    note(format!("wrote {}", path.display()));
    Ok(DevSecrets {
        control_secret: control,
        turn_secret: turn,
    })
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| fail("dev secrets", format!("cannot read /dev/urandom: {e}"), ""))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
