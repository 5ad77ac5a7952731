//! A dropped network is not a logout. The real `ssh` client runs the generated script through
//! the gateway to a real `sshd`, and is then killed with `SIGKILL` (no goodbye, channels open)
//! or loses its network; VNC viewers close cleanly or are reset.
//!
//! The network cut: the script reaches the gateway through a relay in this test (`Network`),
//! which stands in for the user's Wi-Fi or VPN: it forwards each connection both ways until
//! told to go silent (every packet lost, sockets left open: the gateway's keepalives find out)
//! or to reset the gateway's side. The client and the gateway are the real ones.

use std::process::Stdio;
use std::time::Duration;

use crate::builds::*;
use crate::vnc_viewer::VncViewer;
use remote_access_core::{
    AuthorityOptions, BuildRequest, ConnectionInfo, Credentials, EndReason, Gateway, GatewayOptions, Policy,
    RunningGateway, ScriptOptions, Secret, Subscription,
};
use remote_access_test_peers::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How the test's network fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing gets through any more, and nobody is told: a laptop asleep, a lost VPN.
    Silent,
    /// The gateway's side gets a TCP reset.
    Reset,
}

/// A relay on a loopback port to the gateway: the user's network. A cut affects the
/// connections open at the time; later ones go through (the user is back online).
struct Network {
    port: u16,
    cut: watch::Sender<Option<Cut>>,
}

impl Network {
    async fn to(gateway_port: u16) -> Network {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, _) = watch::channel(None);
        let feed = cut.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut user, _)) = listener.accept().await else { return };
                // Subscribed now: only a cut after this connection opened affects it.
                let mut told = feed.subscribe();
                tokio::spawn(async move {
                    let mut gateway = TcpStream::connect(("127.0.0.1", gateway_port)).await.unwrap();
                    let cut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut user, &mut gateway) => return,
                        changed = told.changed() => match changed {
                            Ok(()) => (*told.borrow()).expect("a cut"),
                            Err(_) => return,
                        },
                    };
                    match cut {
                        // Both sockets stay open and silent until the test ends.
                        Cut::Silent => std::future::pending::<()>().await,
                        Cut::Reset => {
                            reset_on_close(&gateway);
                            drop(gateway);
                            std::future::pending::<()>().await
                        }
                    }
                });
            }
        });
        Network { port, cut }
    }

    fn cut(&self, how: Cut) {
        self.cut.send_replace(Some(how));
    }
}

/// SO_LINGER 0: closing the socket sends a reset.
fn reset_on_close(tcp: &TcpStream) {
    socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO)).unwrap();
}

/// A gateway whose keepalives find a silent client in seconds (1 s, three unanswered).
async fn start(authority: &remote_access_core::Authority) -> (Gateway, RunningGateway) {
    let mut options: GatewayOptions = gateway_options();
    options.keepalive_interval = Duration::from_secs(1);
    let gateway = Gateway::new(authority.clone(), options).unwrap();
    let running = gateway.start("127.0.0.1:0").await.unwrap();
    (gateway, running)
}

/// A builder sshd, an authority with a gateway ([`start`]), and one build whose steps have
/// completed, with a reconnect window of `window`; its script reaches the gateway directly, or
/// through the test's [`Network`].
struct Fixture {
    authority: remote_access_core::Authority,
    running: RunningGateway,
    events: Subscription,
    creds: Credentials,
    script: std::path::PathBuf,
    network: Option<Network>,
    _builder: Sshd,
    _scratch: tempfile::TempDir,
}

impl Fixture {
    async fn new(id: &str, window: Duration, through_network: bool) -> Fixture {
        let (builder, scratch) = (Sshd::start(), tempfile::tempdir().unwrap());
        let authority = authority(AuthorityOptions::default());
        let (gateway, running) = start(&authority).await;
        let events = authority.subscribe();
        let network = match through_network {
            true => Some(Network::to(running.local_addr().port()).await),
            false => None,
        };
        let port = network.as_ref().map_or(running.local_addr().port(), |n| n.port);
        let mut request: BuildRequest = request(id, builder.builder());
        let mut policy = Policy::default();
        policy.reconnect_window = window;
        request.policy = Some(policy);
        let creds = authority.issue(request).await.unwrap();
        builder.authorize(&creds.authorized_keys_line());
        let session = authority.session(creds.build_id()).await.unwrap();
        let options = ScriptOptions::new("127.0.0.1", port);
        let info = ConnectionInfo::new(&creds, &session, gateway.host_key(), &options).unwrap();
        let script =
            write_script(scratch.path(), &format!("{id}.sh"), info.posix_script(&creds).unwrap().expose());
        authority.steps_completed(creds.build_id()).await.unwrap();
        Fixture { authority, running, events, creds, script, network, _builder: builder, _scratch: scratch }
    }

    async fn session(&self) -> remote_access_core::Session {
        self.authority.session(self.creds.build_id()).await.unwrap()
    }

    async fn ended_as(&self) -> Option<EndReason> {
        self.session().await.end().map(|(reason, _)| reason.clone())
    }
}

/// The script running a command on the builder that waits for its input to end, in a process
/// group of its own so that the test can kill the script and both of its `ssh` processes (the
/// jump and the builder hop) at once, as a crash or `kill -9` would.
pub(crate) struct Shell {
    child: tokio::process::Child,
    input: Option<tokio::process::ChildStdin>,
}

impl Shell {
    /// Returns once the builder answered through it.
    pub(crate) async fn open(script: &std::path::Path) -> Shell {
        let mut child = script_command(script)
            .arg("echo ready; cat >/dev/null")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .start();
        let input = child.stdin.take();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        assert!(matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"), "the shell came up: {ready:?}");
        Shell { child, input }
    }

    /// The command ends (its input closed) and `ssh` exits as after `exit` in a shell.
    pub(crate) async fn exit(mut self) {
        drop(self.input.take());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        assert!(matches!(status, Ok(Ok(ref s)) if s.success()), "the shell exited: {status:?}");
    }

    /// `kill -9` of the whole client: no DISCONNECT, no channel close; the kernel closes (or
    /// leaves, on a silent network) the sockets.
    pub(crate) fn kill_hard(&self) {
        let group = format!("-{}", self.child.id().expect("running"));
        let killed = std::process::Command::new("kill").args(["-KILL", "--", &group]).status().unwrap();
        assert!(killed.success(), "kill -KILL -- {group}");
    }
}

async fn ended_as(authority: &remote_access_core::Authority, creds: &Credentials) -> Option<EndReason> {
    authority.session(creds.build_id()).await.unwrap().end().map(|(reason, _)| reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ssh_is_a_drop_and_the_user_may_come_back_then_exit_logs_out() {
    let mut fx = Fixture::new("drop-kill", Duration::from_secs(60), false).await;
    let shell = Shell::open(&fx.script).await;
    next_event(&mut fx.events, "connected").await;
    shell.kill_hard();
    let dropped = next_event(&mut fx.events, "dropped").await;
    assert!(dropped.reason.contains("work again until"), "{}", dropped.reason);
    let session = fx.session().await;
    assert!(!session.is_ended(), "a killed client is no logout: {:?}", session.end());
    let by = session.reconnect_by().expect("the reconnect window is open");
    assert!(session.access_rule().contains("reconnect by"), "{}", session.access_rule());
    assert_eq!(session.next_deadline(), Some(by));

    // Back within the window with the same script: the window closes, the build goes on.
    let shell = Shell::open(&fx.script).await;
    next_event(&mut fx.events, "connected").await;
    let session = fx.session().await;
    assert_eq!(session.reconnect_by(), None);
    assert_eq!(session.next_deadline(), Some(session.deadline()), "only the grace period is left");

    // The command ending is a logout (as `exit` in a shell), which finishes the build at once.
    shell.exit().await;
    next_event(&mut fx.events, "logged_out").await;
    next_event(&mut fx.events, "finish_build").await;
    assert_eq!(fx.ended_as().await, Some(EndReason::LoggedOut));
    fx.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_back_within_the_window_ends_the_build_as_connection_lost() {
    let mut fx = Fixture::new("drop-gone", Duration::from_secs(3), false).await;
    let shell = Shell::open(&fx.script).await;
    next_event(&mut fx.events, "connected").await;
    shell.kill_hard();
    next_event(&mut fx.events, "dropped").await;
    // Nobody comes back: the gateway's housekeeping ends it when the window closes.
    let lost = next_event(&mut fx.events, "connection_lost").await;
    assert_eq!(lost.build_id, *fx.creds.build_id());
    next_event(&mut fx.events, "finish_build").await;
    assert_eq!(fx.ended_as().await, Some(EndReason::ConnectionLost));
    let (code, _, _) = run_script(&fx.script, &["true"]).await;
    assert_eq!(code, 255, "no way back in after the window");
    fx.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_gone_silent_or_reset_is_a_drop_and_a_reconnect_keeps_the_build() {
    let mut fx = Fixture::new("drop-net", Duration::from_secs(60), true).await;
    let network = fx.network.take().expect("through the network");

    // Silent: the gateway's keepalives go unanswered.
    let stuck = Shell::open(&fx.script).await;
    next_event(&mut fx.events, "connected").await;
    network.cut(Cut::Silent);
    next_event(&mut fx.events, "dropped").await;
    assert!(!fx.session().await.is_ended());
    stuck.kill_hard(); // the user's ssh would notice after its own keepalives (90 s)

    // Back online: a new connection goes through, then the gateway's side is reset.
    let shell = Shell::open(&fx.script).await;
    next_event(&mut fx.events, "connected").await;
    network.cut(Cut::Reset);
    next_event(&mut fx.events, "dropped").await;
    let session = fx.session().await;
    assert!(!session.is_ended(), "a reset is no logout: {:?}", session.end());
    assert!(session.reconnect_by().is_some());
    shell.kill_hard();

    // And back once more, leaving for good this time: a logout.
    let (code, _, stderr) = run_script(&fx.script, &["true"]).await;
    assert_eq!(code, 0, "{stderr}");
    next_event(&mut fx.events, "logged_out").await;
    fx.running.stop().await.unwrap();
}

/// The gateway's VNC port to an x11vnc builder, after the steps: a viewer that closes its
/// connection logs out; one whose connection is reset dropped out and may come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vnc_viewer_that_closes_logs_out_and_a_reset_one_dropped_out() {
    let server = x11vnc("builder-pw");
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vec![free_port()];
    let authority = authority(options);
    let running = gateway(&authority).start("127.0.0.1:0").await.unwrap();
    let mut events = authority.subscribe();
    let mut request: BuildRequest = request("drop-vnc", server.builder());
    request.builder_vnc_password = Some(Secret::new(server.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    let port = authority.session(creds.build_id()).await.unwrap().vnc_port().unwrap();
    let password = creds.vnc_password().expose().to_owned();
    authority.steps_completed(creds.build_id()).await.unwrap();

    // Reset: SO_LINGER 0 makes the close an RST.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    reset_on_close(&tcp);
    let mut viewer = VncViewer::connect_over(Box::new(tcp), &password).await;
    viewer.refresh().await;
    next_event(&mut events, "connected").await;
    drop(viewer);
    next_event(&mut events, "dropped").await;
    assert!(authority.session(creds.build_id()).await.unwrap().reconnect_by().is_some());

    // Back, then closed the way a viewer closes: the logout ends the build.
    let mut viewer = VncViewer::connect(port, &password).await;
    viewer.refresh().await;
    next_event(&mut events, "connected").await;
    viewer.stream().shutdown().await.unwrap();
    drop(viewer);
    next_event(&mut events, "logged_out").await;
    next_event(&mut events, "finish_build").await;
    assert_eq!(ended_as(&authority, &creds).await, Some(EndReason::LoggedOut));
    running.stop().await.unwrap();
}

/// vncdotool, a real client, quitting after its capture is a logout too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vncdotool_quitting_is_a_logout() {
    let server = x11vnc("builder-pw");
    let mut options = AuthorityOptions::default();
    options.vnc_ports = vec![free_port()];
    let authority = authority(options);
    let running = gateway(&authority).start("127.0.0.1:0").await.unwrap();
    let mut events: Subscription = authority.subscribe();
    let mut request: BuildRequest = request("drop-vncdo", server.builder());
    request.builder_vnc_password = Some(Secret::new(server.password.clone()));
    let creds = authority.issue(request).await.unwrap();
    let port = authority.session(creds.build_id()).await.unwrap().vnc_port().unwrap();
    authority.steps_completed(creds.build_id()).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let status = vncdo(port, creds.vnc_password().expose())
        .arg("capture")
        .arg(scratch.path().join("shot.png"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let status =
        tokio::time::timeout(Duration::from_secs(60), status).await.expect("vncdo finishes").unwrap();
    assert!(status.success());
    next_event(&mut events, "logged_out").await;
    assert_eq!(ended_as(&authority, &creds).await, Some(EndReason::LoggedOut));
    running.stop().await.unwrap();
}

/// Ctrl-C on the scripts' VNC tunnel (`--vnc`, `ssh -N -L`) is the user leaving: a logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_the_vnc_tunnel_is_a_logout() {
    let (builder, scratch) = (Sshd::start(), tempfile::tempdir().unwrap());
    let authority = authority(AuthorityOptions::default());
    let (gateway, running) = start(&authority).await;
    let mut events = authority.subscribe();
    let mut request: BuildRequest = request("drop-tunnel", {
        let mut route = builder.builder();
        route.vnc_port = Some(free_port());
        route
    });
    request.policy = Some(Policy::default());
    let creds = authority.issue(request).await.unwrap();
    let session = authority.session(creds.build_id()).await.unwrap();
    let options = ScriptOptions::new("127.0.0.1", running.local_addr().port());
    let info = ConnectionInfo::new(&creds, &session, gateway.host_key(), &options).unwrap();
    let script = write_script(scratch.path(), "tunnel.sh", info.posix_script(&creds).unwrap().expose());
    authority.steps_completed(creds.build_id()).await.unwrap();

    let local = free_port();
    let tunnel = script_command(&script)
        .args(["--vnc", &local.to_string()])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .start();
    next_event(&mut events, "connected").await;
    // `connected` comes with the login, before ssh sets up the forward and installs its
    // SIGINT handler. A user presses Ctrl-C on a tunnel in use: wait until a connection to the
    // local port gets the gateway's RFB greeting through the tunnel, which only ssh's client
    // loop carries. (`script_command` gives the script SIGINT at its default, as a terminal
    // does, whatever the test runner inherited.)
    eventually("the tunnel carries the gateway's RFB greeting", || async {
        let Ok(mut vnc) = TcpStream::connect(("127.0.0.1", local)).await else { return false };
        let mut version = [0u8; 12];
        let read = tokio::time::timeout(Duration::from_secs(5), vnc.read_exact(&mut version)).await;
        matches!(read, Ok(Ok(_))) && version.starts_with(b"RFB ")
    })
    .await;
    // What a terminal's Ctrl-C does: SIGINT to the foreground process group.
    let group = format!("-{}", tunnel.id().unwrap());
    assert!(std::process::Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    next_event(&mut events, "logged_out").await;
    running.stop().await.unwrap();
}
