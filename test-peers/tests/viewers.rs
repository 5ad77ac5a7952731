//! The VNC viewers and screens against a real x11vnc, without the gateway: when a gateway test
//! fails, these show whether the clients themselves work. (noVNC in Chromium is left to the
//! gateway's tests: it costs seconds of both cores.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use remote_access_test_peers::{
    Screen, Server, TigerViewer, VncServer, gvnccapture, on_display_port, paint, png_size, screenshot,
    vncpasswd, vncsnapshot,
};

const PINK: [u8; 3] = [0xff, 0x00, 0xcc];

#[test]
fn a_painted_screen_shows_the_colour() {
    let screen = Screen::new(320, 200);
    paint(screen.display(), [0xff, 0x80, 0x00]);
    let shot = screen.screenshot();
    assert_eq!((shot.width, shot.height), (320, 200));
    assert_eq!(shot.share_of([0xff, 0x80, 0x00], 0), 1.0, "{shot:?}");
}

#[tokio::test]
async fn the_viewers_show_a_painted_builder_and_refuse_a_wrong_password() {
    let builder = VncServer::x11vnc("secret", &vncpasswd("secret"));
    paint(builder.display, PINK);
    assert!(screenshot(builder.display).share_of(PINK, 0) > 0.99);
    let port_form = format!("127.0.0.1::{}", builder.port);

    let screen = Screen::new(800, 600);
    let mut viewer = TigerViewer::start(&screen, &port_form, "secret", &[]);
    viewer.wait_for_log(TigerViewer::CONNECTED).await;
    // 640x480 of 800x600 is 64%, less the viewer's statistics graph.
    screen.wait_for(|shot| shot.share_of(PINK, 8) > 0.5).await.expect("the viewer shows the builder");
    drop(viewer);
    let mut refused = TigerViewer::start(&screen, &port_form, "wrong", &[]);
    let log = refused.wait_for_log(TigerViewer::AUTH_FAILED).await;
    assert!(log.contains("password check failed"), "{log}");

    let dir = tempfile::tempdir().unwrap();
    let (code, out) = vncsnapshot(&port_form, "secret", &dir.path().join("a.jpg")).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = vncsnapshot(&port_form, "wrong", &dir.path().join("b.jpg")).await;
    assert_eq!((code, out.trim()), (1, "VNC authentication failed"));
    // gvnccapture has no `::port` form: it reads display 0 (port 5900).
    let (code, out) = gvnccapture(&port_form, "secret", &dir.path().join("c.png")).await;
    assert_eq!((code, out.trim()), (1, "Unable to connect to 127.0.0.1:0"));

    // The display form `host:N`, with a second x11vnc on the same screen at port 5900 + N.
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, vncpasswd("secret")).unwrap();
    let (port, _x11vnc) = on_display_port(|port| {
        let mut server = Server::spawn(
            "x11vnc",
            Command::new("x11vnc")
                .args(["-display", &format!(":{}", builder.display), "-rfbport", &port.to_string()])
                .args(["-listen", "127.0.0.1", "-noipv6", "-rfbportv6", "-1", "-rfbauth"])
                .arg(&passwd)
                .args(["-forever", "-shared", "-quiet", "-nopw"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        server.wait_listening(port).then_some(server)
    });
    let display_form = format!("127.0.0.1:{}", port - 5900);
    let (code, out) = gvnccapture(&display_form, "secret", &dir.path().join("d.png")).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(png_size(&std::fs::read(dir.path().join("d.png")).unwrap()), Some((640, 480)));
    let (code, out) = gvnccapture(&display_form, "wrong", &dir.path().join("e.png")).await;
    assert_eq!(code, 1, "{out}");
    let (code, out) = vncsnapshot(&display_form, "secret", &dir.path().join("f.jpg")).await;
    assert_eq!(code, 0, "{out}");
}
