//! Stable addresses and the kernel's ephemeral port range: a listen address
//! inside it can be taken by any outgoing connection on this host (an
//! instance's `PORT`, a client socket) while the service is down, and then
//! recovery cannot bind it.

use crate::domain::manifest::Manifest;

/// Linux's default, when `/proc` cannot tell.
const DEFAULT_RANGE: (u16, u16) = (32_768, 60_999);

/// The kernel's ephemeral port range on this host.
pub fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| parse_range(&s))
        .unwrap_or(DEFAULT_RANGE)
}

fn parse_range(s: &str) -> Option<(u16, u16)> {
    let mut it = s.split_whitespace().map(str::parse::<u16>);
    let (lo, hi) = (it.next()?.ok()?, it.next()?.ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// One warning per service whose `launch.listen` port is in `range`.
pub fn listen_warnings(m: &Manifest, range: (u16, u16)) -> Vec<String> {
    m.services
        .iter()
        .filter_map(|(name, s)| {
            let addr = s.launch.get("listen")?.as_str()?;
            let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
            (range.0..=range.1).contains(&port).then(|| {
                format!(
                    "services.{name}.launch.listen {addr} is in this host's ephemeral port range ({}-{}): another connection can take it while {name} is down; choose a port below {}",
                    range.0, range.1, range.0
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::source::Format;

    #[test]
    fn ports_in_the_ephemeral_range_are_warned_about() {
        let image = format!("sha256:{}", "a".repeat(64));
        let text = format!(
            "environment = \"e\"\nregion = \"r\"\n\
             [services.a]\nimage = \"{image}\"\nlaunch = {{ listen = \"127.0.0.1:45000\" }}\n\
             [services.b]\nimage = \"{image}\"\nlaunch = {{ listen = \"127.0.0.1:8080\" }}\n\
             [services.c]\nimage = \"{image}\"\n"
        );
        let m = crate::domain::manifest::parse(text.as_bytes(), Format::Toml).unwrap();
        let w = listen_warnings(&m, (32_768, 60_999));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with(
            "services.a.launch.listen 127.0.0.1:45000 is in this host's ephemeral port range (32768-60999)"
        ));
        assert_eq!(parse_range("32768\t60999\n"), Some((32_768, 60_999)));
        assert_eq!(parse_range("garbage"), None);
        assert_eq!(parse_range("9 1"), None);
    }
}
