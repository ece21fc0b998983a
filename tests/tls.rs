//! TLS and mTLS on the gRPC port: certificates made by openssl in the test;
//! a client without a certificate is refused, one signed by the CA works,
//! and `https://` never falls back to plaintext.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Server, lifeboat, manifests};

/// A CA; a server certificate for 127.0.0.1; a client certificate; and a
/// client certificate from another CA.
fn certificates(dir: &Path) {
    let made = Command::new("sh")
        .current_dir(dir)
        .args([
            "-c",
            "set -e; \
             for ca in ca other; do openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=$ca -keyout $ca.key -out $ca.pem 2>/dev/null; done; \
             printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > server.cnf; \
             printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' > client.cnf; \
             sign() { openssl req -newkey rsa:2048 -nodes -subj /CN=$1 -keyout $1.key -out $1.csr 2>/dev/null; \
                      openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 1 -extfile $3 -out $1.pem 2>/dev/null; }; \
             sign server ca server.cnf; sign client ca client.cnf; sign stranger other client.cnf; \
             openssl req -newkey rsa:2048 -nodes -subj /CN=old -keyout old.key -out old.csr 2>/dev/null; \
             openssl x509 -req -in old.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out old.pem 2>/dev/null",
        ])
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
}

#[test]
fn mtls_admits_only_clients_with_a_certificate_from_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    let p = |x: &str| d.join(x).display().to_string();
    std::fs::write(
        d.join("lifeboat.toml"),
        format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            p("server.pem"),
            p("server.key"),
            p("ca.pem")
        ),
    )
    .unwrap();
    let args =
        ["--config".to_string(), p("lifeboat.toml"), "--store".into(), p("store"), "--local-dir".into(), p("local")];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::launch(&args, &[]);
    let https = format!("https://{}", server.addr());
    let shop = manifests().join("good/shop.toml");
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = extra.to_vec();
        a.extend(["snapshot", "push", shop.to_str().unwrap()]);
        lifeboat(Some(&https), &a)
    };
    let (ca, cert, key) = (p("ca.pem"), p("client.pem"), p("client.key"));
    let out = with(&["--ca", &ca, "--cert", &cert, "--key", &key]);
    assert_eq!(out.code, 0, "a client certificate from the CA works: {out:?}");
    // Refusals use the documented exit codes, with the reason.
    let out = with(&["--ca", &ca]);
    assert_eq!(out.code, 5, "no client certificate: refused: {out:?}");
    assert!(out.stderr.contains("requires a client certificate") && out.stderr.contains("--cert and --key"), "{out:?}");
    let (stranger, stranger_key) = (p("stranger.pem"), p("stranger.key"));
    let out = with(&["--ca", &ca, "--cert", &stranger, "--key", &stranger_key]);
    assert_eq!(out.code, 5, "a certificate from another CA: refused: {out:?}");
    assert!(out.stderr.contains("refused this client"), "{out:?}");
    let out = with(&["--ca", &ca, "--cert", &p("old.pem"), "--key", &p("old.key")]);
    assert_eq!(out.code, 5, "an X.509 v1 certificate: {out:?}");
    assert!(out.stderr.contains("v1") && out.stderr.contains("v3"), "{out:?}");
    let out = with(&["--cert", &cert, "--key", &key]);
    assert_eq!(out.code, 6, "the server's certificate must chain to a trusted CA: {out:?}");
    assert!(out.stderr.contains("--ca"), "{out:?}");
    // Plaintext never reaches a TLS port, and TLS files with http:// are a usage error.
    let out = lifeboat(Some(server.addr()), &["snapshot", "list", "shop"]);
    assert_ne!(out.code, 0, "{out:?}");
    let out = lifeboat(Some(server.addr()), &["--ca", &ca, "snapshot", "list", "shop"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--ca/--cert are for TLS, but --server"), "{out:?}");
    let out = lifeboat(Some(&https), &["--ca", &ca, "--cert", &cert, "snapshot", "list", "shop"]);
    assert_eq!(out.code, 2, "--cert needs --key: {out:?}");
}
