//! The deployment docs/operations.md describes, for real: nginx terminating TLS on loopback
//! with a certificate from a test CA, in front of the server. A phone that trusts that CA signs
//! in and syncs through it; one that does not is told the handshake failed, not that it is
//! offline; one given no CA trusts what its platform trusts (a CA a device manager installed);
//! the console's cookies come back `Secure`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baylink_domain::EntityKind;
use baylink_tests::harness::{Device, PASSWORD, Server, VILLAGE, resident_id};

/// Debian's nginx, which `scripts/test` installs.
fn nginx() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is installed (Debian's nginx-light; ./scripts/test installs it)")
}

fn run(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA and a certificate it signed for 127.0.0.1, made with Debian's `openssl`: the
/// CA's PEM (`ca.pem`), the server's certificate and key (`server.pem`, `server.key`).
fn certificates(dir: &Path) {
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Baylink test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        dir,
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions written");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ],
        dir,
    );
}

/// nginx running in front of `upstream`, stopped when dropped.
struct Nginx {
    url: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Nginx {
    /// TLS on a free loopback port, proxying to `upstream` as docs/operations.md says: the
    /// client's address appended to `X-Forwarded-For`.
    fn start(upstream: &str) -> Nginx {
        let dir = tempfile::tempdir().expect("temporary directory");
        certificates(dir.path());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let d = dir.path().display();
        let upstream = upstream.trim_start_matches("http://");
        // Run as root (CI), the workers would be `nobody` and could not write the temporary
        // files a large push is buffered in, here.
        let user = if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
        {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            "{user}
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 16m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_buffering off;
        }}
        location = /metrics {{ deny all; }}
    }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("configuration written");
        let child = Command::new(nginx())
            .args(["-p", &d.to_string(), "-c", "nginx.conf", "-e", "error.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            url: format!("https://127.0.0.1:{port}"),
            dir,
            child,
        }
    }

    fn ca(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.pem")).expect("the CA's PEM")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let d = self.dir.path().display().to_string();
        let _ = Command::new(nginx())
            .args([
                "-p",
                &d,
                "-c",
                "nginx.conf",
                "-e",
                "error.log",
                "-s",
                "stop",
            ])
            .output();
        let _ = self.child.wait();
    }
}

#[test]
fn a_phone_that_trusts_the_intranet_ca_syncs_through_nginx_over_tls_and_one_that_does_not_is_told_why()
 {
    let server = Server::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().expect("a CIDR")];
        c.secure_cookies = true;
    });
    server.add_officer("o1", VILLAGE);
    server.add_reviewer("r006", "441303006");
    let proxy = Nginx::start(&server.url);

    let mut untrusting = Device::new("o1");
    let refused = mobile_core::sync::login(
        &mut untrusting.store,
        &proxy.url,
        "o1",
        PASSWORD,
        "phone without the CA",
    );
    match refused {
        Err(mobile_core::Error::Network(n)) => {
            assert_eq!(n.kind, mobile_core::NetworkKind::Tls, "{n}")
        }
        other => panic!("a certificate the phone does not trust: {other:?}"),
    }

    let mut phone = Device::new("o1");
    phone
        .store
        .set_server_ca(Some(&proxy.ca()))
        .expect("the CA kept");
    mobile_core::sync::login(&mut phone.store, &proxy.url, "o1", PASSWORD, "phone")
        .expect("signed in through the proxy");
    let number = resident_id("44130319900101001");
    let person = phone.capture(
        EntityKind::Person,
        &[
            ("village", VILLAGE),
            ("id_number", &number),
            ("name", "陈静"),
        ],
    );
    let report = phone.sync();
    assert!(report.pushed > 0, "{report:?}");
    let held = server.snapshot();
    assert!(
        held.entities.contains_key(&person),
        "the capture reached the server through nginx"
    );
    // A second phone of the officer, the CA kept in its store, brings her down.
    let mut second = Device::new("o1");
    second.store.set_server_ca(Some(&proxy.ca())).expect("CA");
    mobile_core::sync::login(&mut second.store, &proxy.url, "o1", PASSWORD, "second")
        .expect("signed in");
    second.sync();
    assert!(second.states().contains_key(&person));

    // The console through the proxy: its cookies are Secure.
    let mut roots = vec![];
    for item in ureq::tls::parse_pem(proxy.ca().as_bytes()) {
        if let Ok(ureq::tls::PemItem::Certificate(cert)) = item {
            roots.push(cert);
        }
    }
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::from(roots))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    // Metrics are for the monitoring system, not the proxy's public side.
    let metrics = agent
        .get(&format!("{}/metrics", proxy.url))
        .call()
        .expect("an answer");
    assert_eq!(metrics.status(), 403);
    let page = agent
        .get(&format!("{}/console/login", proxy.url))
        .call()
        .expect("the console's sign-in page");
    let cookies: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    assert!(!cookies.is_empty(), "the sign-in form sets its cookie");
    assert!(
        cookies.iter().all(|c| c.contains("; Secure")),
        "{cookies:?}"
    );
    let token = cookies
        .iter()
        .find_map(|c| c.strip_prefix("baylink_login="))
        .and_then(|c| c.split(';').next())
        .expect("the form's token")
        .to_owned();
    let signed_in = agent
        .post(&format!("{}/console/login", proxy.url))
        .header("cookie", &format!("baylink_login={token}"))
        .send_form([
            ("username", "r006"),
            ("password", PASSWORD),
            ("csrf", &token),
        ])
        .expect("the console's sign-in");
    let session: Vec<&str> = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        session.len() >= 2 && session.iter().all(|c| c.contains("; Secure")),
        "status {}: {session:?}",
        signed_in.status()
    );
}

/// What the child process of [`a_phone_trusts_a_ca_its_platform_trusts`] runs: the sign-in of a
/// phone given no CA of its own, in a process whose platform trust store is the environment's.
const PLATFORM_CHILD: &str = "behind_proxy::platform_trust_child";

#[test]
fn a_phone_trusts_a_ca_its_platform_trusts_without_being_given_it() {
    let server = Server::start();
    server.add_officer("o1", VILLAGE);
    let proxy = Nginx::start(&server.url);
    let ca = proxy.dir.path().join("ca.pem");
    let child = |trusted: Option<&Path>| {
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args([PLATFORM_CHILD, "--exact", "--ignored", "--nocapture"])
            .env("BAYLINK_PLATFORM_CHILD_URL", &proxy.url)
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(trusted) = trusted {
            // The system's trust store as the platform verifier reads it on Linux: what a
            // device manager installs on a phone.
            command.env("SSL_CERT_FILE", trusted);
        }
        let out = command.output().expect("the child runs");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("1 passed"), "the child ran: {said}");
        said
    };
    let trusted = child(Some(&ca));
    assert!(trusted.contains("child: signed in"), "{trusted}");
    let untrusted = child(None);
    assert!(untrusted.contains("child: refused tls"), "{untrusted}");
}

/// Run only by the test above, in a process of its own (it names the proxy's address).
#[test]
#[ignore = "a child process of a_phone_trusts_a_ca_its_platform_trusts_without_being_given_it"]
fn platform_trust_child() {
    let url = std::env::var("BAYLINK_PLATFORM_CHILD_URL").expect("run by its parent test");
    let mut phone = Device::new("o1");
    match mobile_core::sync::login(&mut phone.store, &url, "o1", PASSWORD, "managed phone") {
        Ok(()) => println!("child: signed in"),
        Err(mobile_core::Error::Network(n)) if n.kind == mobile_core::NetworkKind::Tls => {
            println!("child: refused tls")
        }
        Err(e) => panic!("neither signed in nor refused by TLS: {e}"),
    }
}
