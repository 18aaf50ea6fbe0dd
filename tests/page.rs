//! The admin status page, rendered by a real browser: headless Chromium (Debian's `chromium`)
//! takes a screenshot, and the test checks that the certificate table is there and that the
//! certificate inside the warning window is drawn in red.
//!
//! Needs `chromium` on the PATH, so it is ignored by a plain `cargo test`; `.ci/run` installs
//! Chromium and runs it with `cargo test --test page -- --ignored`.

mod support;

use std::process::Command;
use support::*;

fn chromium(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium must be installed (apt-get install chromium)")
}

#[tokio::test]
#[ignore = "needs Debian's chromium; .ci/run runs it with --ignored"]
async fn status_page_renders_the_certificate_table_with_expiring_rows_in_red() {
    let files = Files::new();
    let pki = TestPki::new();
    pki.write(&files);
    let soon = server_cert_expiring_in(&pki, 5);
    files.write("server.pem", &soon.cert_pem);
    files.write_key("server.key", &soon.key_pem);
    let backend = spawn_echo().await;
    let p = |name: &str| files.path(name).to_string_lossy().into_owned();
    let server = Certgate::start_with(
        &[
            "server",
            "--name",
            "edge",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &backend.to_string(),
            "--cert",
            &p("server.pem"),
            "--key",
            &p("server.key"),
            "--client-ca",
            &p("ca.pem"),
            "--admin",
            "127.0.0.1:0",
        ],
        2,
    );
    let admin = server
        .addresses
        .iter()
        .find(|(name, _)| name == "admin")
        .unwrap()
        .1;
    let url = format!("http://{admin}/");
    let profile = files.path("chromium-profile");

    let dom = chromium(&["--dump-dom", &url], &profile);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<table id=\"certificates\">"), "{dom}");
    assert!(
        dom.contains("<tr class=\"expiring\"><td>edge</td><td>server</td>"),
        "{dom}"
    );

    let screenshot = files.path("page.png");
    let shot = chromium(
        &[&format!("--screenshot={}", screenshot.display()), &url],
        &profile,
    );
    assert!(
        screenshot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&screenshot).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    let channels = frame.color_type.samples();
    let pixels = &pixels[..frame.buffer_size()];
    let dark_red = pixels
        .chunks(channels)
        .filter(|p| p[0] > 150 && p[1] < 60 && p[2] < 60)
        .count();
    let dark = pixels
        .chunks(channels)
        .filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80)
        .count();
    // The expiring row's text is red; the rest of the page's text is black.
    assert!(
        dark_red > 200,
        "no red text for the expiring certificate ({dark_red} red pixels)"
    );
    assert!(dark > 1000, "the page looks empty ({dark} dark pixels)");
}
